//! Typed statuses for requests that do not decode.
//!
//! tonic answers a request whose bytes are not the method's protobuf message (invalid
//! UTF-8 in a string, a truncated field or frame, garbage) with INTERNAL, and a message
//! over `MESSAGE_BYTES_MAX` with OUT_OF_RANGE. Both are the caller's doing: INTERNAL
//! would send operators looking for a bug of ours and tell clients to retry, and
//! OUT_OF_RANGE means "a value past a valid range" (as for `min_position`). This layer
//! rewrites exactly those answers of tonic's decoder, recognised by code and by the
//! message tonic and prost give them, to INVALID_ARGUMENT and RESOURCE_EXHAUSTED (the
//! code gRPC itself uses for a message over the size limit). The message is kept. An
//! INTERNAL or OUT_OF_RANGE from our own code has another message and passes as it is.

use tonic::codegen::http;
use tonic::{Code, Status};

/// The messages tonic's decoder gives a request it cannot decode: prost's parse error,
/// a frame cut short, a compressed frame without an encoding, no message at all.
const UNDECODABLE: [&str; 4] = [
    "failed to decode Protobuf message",
    "Unexpected EOF decoding stream",
    "protocol error: received message with compressed-flag but no grpc-encoding",
    "Missing request message",
];
/// The message tonic's decoder gives a message over the size limit.
const TOO_LARGE: &str = "Error, decoded message length too large";

/// The status a decoder error of tonic should have had, if `status` is one.
pub fn typed(status: &Status) -> Option<Code> {
    let message = status.message();
    match status.code() {
        Code::Internal if UNDECODABLE.iter().any(|prefix| message.starts_with(prefix)) => Some(Code::InvalidArgument),
        Code::OutOfRange if message.starts_with(TOO_LARGE) => Some(Code::ResourceExhausted),
        _ => None,
    }
}

/// Rewrites the status of a trailers-only answer (how tonic answers a request it could
/// not decode) as `typed` says; every other response passes unchanged.
pub fn typed_response<B>(mut response: http::Response<B>) -> http::Response<B> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if let Some(code) = typed(&status) {
        let retyped = Status::new(code, status.message().to_string());
        if let Err(error) = retyped.add_header(response.headers_mut()) {
            tracing::warn!(%error, "a decoder error kept its status");
        }
    }
    response
}

/// The layer for `Server::layer`.
pub fn layer<B>() -> tower::util::MapResponseLayer<fn(http::Response<B>) -> http::Response<B>> {
    tower::util::MapResponseLayer::new(typed_response::<B> as fn(http::Response<B>) -> http::Response<B>)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_decoders_errors_are_retyped() {
        let prost =
            Status::internal("failed to decode Protobuf message: invalid string value: data is not UTF-8 encoded");
        assert_eq!(typed(&prost), Some(Code::InvalidArgument));
        assert_eq!(typed(&Status::internal("Unexpected EOF decoding stream.")), Some(Code::InvalidArgument));
        let large = Status::out_of_range(
            "Error, decoded message length too large: found 20971520 bytes, the limit is: 8388608 bytes",
        );
        assert_eq!(typed(&large), Some(Code::ResourceExhausted));
        assert_eq!(typed(&Status::out_of_range("min_position 9 is beyond the log's end 3")), None);
        assert_eq!(typed(&Status::internal("the writer stopped")), None);
        assert_eq!(typed(&Status::invalid_argument("failed to decode Protobuf message")), None);
    }
}
