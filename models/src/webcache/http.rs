//! webcache over HTTP, for `curl` and for the simulator's HTTP workload alike.
//!
//! - `GET /item/KEY`: `200` with `{"key", "version", "value", "cache": "hit" | "miss"}`, or
//!   `404` when the key was never written.
//! - `PUT /item/KEY` with the value as the body: `200` with `{"key", "version"}`.

use super::Msg;
use retrace_sim::http::{percent_decode, percent_encode, HttpApi, HttpRequest, HttpResponse};
use serde_json::json;

/// Values larger than this are refused with `413`.
pub const VALUE_BYTES_MAX: usize = 64 * 1024;

pub struct WebcacheHttp;

impl HttpApi<Msg> for WebcacheHttp {
    fn request(&self, request: &HttpRequest) -> Result<Msg, HttpResponse> {
        let Some(segment) = request.path().strip_prefix("/item/") else {
            return Err(HttpResponse::error(
                404,
                "webcache serves /item/KEY (GET to read, PUT to write)",
            ));
        };
        let key = match percent_decode(segment) {
            Some(key) if !key.is_empty() && !key.contains('/') => key,
            _ => {
                return Err(HttpResponse::error(
                    400,
                    "a key is one non-empty path segment",
                ))
            }
        };
        match request.method.as_str() {
            "GET" => Ok(Msg::Get { key }),
            "PUT" | "POST" => {
                if request.body.len() > VALUE_BYTES_MAX {
                    return Err(HttpResponse::error(
                        413,
                        format!("a value is at most {VALUE_BYTES_MAX} bytes"),
                    ));
                }
                let value = String::from_utf8(request.body.clone())
                    .map_err(|_| HttpResponse::error(400, "a value is UTF-8 text"))?;
                Ok(Msg::Put { key, value })
            }
            other => Err(HttpResponse::error(
                405,
                format!("{other} is not GET or PUT"),
            )),
        }
    }

    fn response(&self, answer: &Msg) -> HttpResponse {
        match answer {
            Msg::Item {
                key,
                version,
                value: Some(value),
                from_cache,
            } => HttpResponse::json(
                200,
                &json!({
                    "key": key,
                    "version": version,
                    "value": value,
                    "cache": if *from_cache { "hit" } else { "miss" },
                }),
            ),
            Msg::Item { key, .. } => HttpResponse::json(404, &json!({ "key": key, "value": null })),
            Msg::Stored { key, version } => {
                HttpResponse::json(200, &json!({ "key": key, "version": version }))
            }
            other => HttpResponse::error(500, format!("not an answer: {other:?}")),
        }
    }

    fn client_request(&self, message: &Msg) -> Option<HttpRequest> {
        match message {
            Msg::Get { key } => Some(HttpRequest::new(
                "GET",
                &format!("/item/{}", percent_encode(key)),
                "",
            )),
            Msg::Put { key, value } => {
                let mut request = HttpRequest::new(
                    "PUT",
                    &format!("/item/{}", percent_encode(key)),
                    value.as_bytes(),
                );
                request
                    .headers
                    .push(("Content-Type".into(), "text/plain".into()));
                Some(request)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_survives_its_own_http_form() {
        for msg in [
            Msg::Get { key: "k1".into() },
            Msg::Put {
                key: "a b".into(),
                value: "v 1".into(),
            },
        ] {
            let request = WebcacheHttp.client_request(&msg).unwrap();
            assert_eq!(WebcacheHttp.request(&request), Ok(msg));
        }
        let status = |method: &str, target: &str| {
            WebcacheHttp
                .request(&HttpRequest::new(method, target, ""))
                .unwrap_err()
                .status
        };
        assert_eq!(status("GET", "/kv/x"), 404);
        assert_eq!(status("DELETE", "/item/x"), 405);
        assert_eq!(status("GET", "/item/"), 400);
    }
}
