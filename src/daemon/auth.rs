//! Who is asking: the bearer token of a request, and secrets compared in
//! constant time. Shared by the API and the dashboard.

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// Whether `given` is `expected`, in time that does not depend on where
/// they differ.
pub(super) fn equal_secrets(given: &[u8], expected: &str) -> bool {
    given.ct_eq(expected.as_bytes()).into()
}

/// The token of an `Authorization: Bearer …` header.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)?
        .as_bytes()
        .strip_prefix(b"Bearer ")
}
