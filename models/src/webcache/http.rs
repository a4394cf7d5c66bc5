//! webcache over HTTP, for `curl` and for the simulator's HTTP workload alike.
//!
//! - `GET /item/KEY`: `200` with `{"key", "version", "value", "cache": "hit" | "miss"}`, or
//!   `404` when the key was never written.
//! - `PUT /item/KEY` with the value as the body: `200` with `{"key", "version"}`.

use super::Msg;
use retrace_sim::http::{
    key_value_request, percent_encode, HttpApi, HttpRequest, HttpResponse, KeyValueRequest,
};
use serde_json::json;

/// Values larger than this are refused with `413`.
pub const VALUE_BYTES_MAX: usize = 64 * 1024;

pub struct WebcacheHttp;

impl HttpApi<Msg> for WebcacheHttp {
    fn request(&self, request: &HttpRequest) -> Result<Msg, HttpResponse> {
        Ok(
            match key_value_request(request, "webcache", "/item/", VALUE_BYTES_MAX)? {
                KeyValueRequest::Get { key } => Msg::Get { key },
                KeyValueRequest::Put { key, value } => Msg::Put { key, value },
            },
        )
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
