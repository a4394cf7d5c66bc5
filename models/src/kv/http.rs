//! kv over HTTP: a REST face on the client nodes' operations, for `curl` and for the
//! simulator's HTTP workload alike.
//!
//! - `GET /kv/KEY` reads a key: `200` with `{"value": ..., "version": ...}`, or `404`.
//! - `PUT /kv/KEY` (or `POST`) with the value as the body writes it: `200` with its version.
//! - A replica that is not primary answers `503`; an operation whose outcome is unknown
//!   (the client gave up) `504`; one the client refused (too many outstanding) `429`.

use super::msg::{Msg, Op, OpResult};
use retrace_sim::http::{
    key_value_request, percent_encode, HttpApi, HttpRequest, HttpResponse, KeyValueRequest,
};
use serde_json::json;

/// Values larger than this are refused with `413` (a kv value is a short string).
pub const VALUE_BYTES_MAX: usize = 64 * 1024;

pub struct KvHttp;

impl HttpApi<Msg> for KvHttp {
    fn request(&self, request: &HttpRequest) -> Result<Msg, HttpResponse> {
        Ok(Msg::Op(
            match key_value_request(request, "kv", "/kv/", VALUE_BYTES_MAX)? {
                KeyValueRequest::Get { key } => Op::Get { key },
                KeyValueRequest::Put { key, value } => Op::Put { key, value },
            },
        ))
    }

    fn response(&self, answer: &Msg) -> HttpResponse {
        let Msg::Done(result) = answer else {
            return HttpResponse::error(500, format!("not an answer: {answer:?}"));
        };
        match result {
            OpResult::PutOk { version } => HttpResponse::json(200, &json!({ "version": version })),
            OpResult::GetOk { entry: Some(entry) } => HttpResponse::json(
                200,
                &json!({ "value": entry.value, "version": entry.version }),
            ),
            OpResult::GetOk { entry: None } => HttpResponse::json(404, &json!({ "value": null })),
            OpResult::NotPrimary { hint } => {
                HttpResponse::json(503, &json!({ "not_primary": hint.0 }))
            }
            OpResult::Failed { reason } => HttpResponse::json(504, &json!({ "failed": reason })),
            OpResult::Refused { reason } => HttpResponse::json(429, &json!({ "refused": reason })),
        }
    }

    fn client_request(&self, message: &Msg) -> Option<HttpRequest> {
        let Msg::Op(op) = message else {
            return None;
        };
        Some(match op {
            Op::Get { key } => HttpRequest::new("GET", &format!("/kv/{}", percent_encode(key)), ""),
            Op::Put { key, value } => {
                let mut request = HttpRequest::new(
                    "PUT",
                    &format!("/kv/{}", percent_encode(key)),
                    value.as_bytes(),
                );
                request
                    .headers
                    .push(("Content-Type".into(), "text/plain".into()));
                request
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_survives_its_own_request() {
        for op in [
            Op::Get { key: "k1".into() },
            Op::Put {
                key: "a b".into(),
                value: "v 1".into(),
            },
        ] {
            let msg = Msg::Op(op);
            let request = KvHttp.client_request(&msg).unwrap();
            assert_eq!(KvHttp.request(&request), Ok(msg));
        }
    }

    #[test]
    fn requests_kv_cannot_serve_are_refused_with_their_status() {
        let status = |method: &str, target: &str| {
            KvHttp
                .request(&HttpRequest::new(method, target, ""))
                .unwrap_err()
                .status
        };
        assert_eq!(status("GET", "/other"), 404);
        assert_eq!(status("GET", "/kv/"), 400);
        assert_eq!(status("GET", "/kv/a/b"), 400);
        assert_eq!(status("DELETE", "/kv/a"), 405);
    }
}
