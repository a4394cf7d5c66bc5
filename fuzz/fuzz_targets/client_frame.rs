//! What a node's client port reads: frames (4-byte length + JSON) decoded as kv requests,
//! or, when the first byte is a method's letter (as the port tells them apart), HTTP
//! request heads through the port's parser and its limits, then kv's HTTP mapping.
#![no_main]
use libfuzzer_sys::fuzz_target;
use retrace_sim::http::HttpApi;

fuzz_target!(|data: &[u8]| {
    if data.first().is_some_and(u8::is_ascii_uppercase) {
        let mut rest = data;
        // Pipelined requests, as the port reads them: head, body, the next head.
        while let Ok(Some(head)) = retrace_recorder::http_port::parse_head(rest) {
            let end = head.len.saturating_add(head.body_len as usize);
            let mut request = head.request;
            request.body = rest
                .get(head.len..end.min(rest.len()))
                .unwrap_or(&[])
                .to_vec();
            if let Ok(msg) = retrace_models::kv::http::KvHttp.request(&request) {
                let _ = retrace_models::kv::http::KvHttp.response(&msg);
            }
            match rest.get(end..) {
                Some(next) if !next.is_empty() && end > 0 => rest = next,
                _ => break,
            }
        }
        return;
    }
    let mut input = data;
    while let Ok(frame) = retrace_recorder::client::read_frame(&mut input) {
        let _ = serde_json::from_slice::<retrace_models::kv::msg::Msg>(&frame);
    }
});
