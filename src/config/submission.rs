//! Submission settings: the per-backend `submission` endpoint.

use super::{endpoint, Endpoint, Problems, Security};

/// `backends.NAME.submission`: the store's submission service, over STARTTLS
/// or implicit TLS only (the user's password crosses it).
pub(super) fn endpoint_of(p: &mut Problems, key: &str, text: Option<&str>) -> Option<Endpoint> {
    endpoint(
        p,
        key,
        text?,
        &[
            ("smtp+starttls", Security::StartTls, 587),
            ("smtps", Security::Tls, 465),
        ],
    )
}
