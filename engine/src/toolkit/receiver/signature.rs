//! Verifying `X-Backflow-Signature`, the HMAC the webhook destination signs bodies with.

use axum::http::HeaderMap;

/// Why a request's signature was refused (the receiver answers 401 `bad signature: …`).
#[derive(Debug, thiserror::Error)]
pub(super) enum SignatureError {
    /// The request has no (readable) `X-Backflow-Signature` header.
    #[error("no X-Backflow-Signature header")]
    NoHeader,
    /// The header has no `t=` (timestamp) part.
    #[error("no t=")]
    NoTimestamp,
    /// The header has no `v1=` (signature) part.
    #[error("no v1=")]
    NoSignature,
    /// The `v1=` part is not hexadecimal.
    #[error("v1 is not hex")]
    NotHex,
    /// The secret cannot key an HMAC.
    #[error(transparent)]
    Key(#[from] hmac::digest::InvalidLength),
    /// The signature is not the body's.
    #[error("signature mismatch")]
    Mismatch,
}

/// Checks `X-Backflow-Signature: t=UNIX,v1=HEX` = HMAC-SHA256(secret, "UNIX." + body).
pub(super) fn verify_signature(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), SignatureError> {
    use hmac::Mac;
    let header = headers
        .get("x-backflow-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or(SignatureError::NoHeader)?;
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", x)) => t = Some(x),
            Some(("v1", x)) => v1 = Some(x),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::NoTimestamp)?;
    let v1 = v1.ok_or(SignatureError::NoSignature)?;
    let expected = hex::decode(v1).map_err(|_| SignatureError::NotHex)?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}
