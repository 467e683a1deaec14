//! imgproxy URL signatures: HMAC-SHA256 over (salt ‖ path), URL-safe base64 without padding,
//! optionally truncated to `signature_size` bytes; several key/salt pairs, each naming a
//! tenant. Comparison is constant-time (`hmac`'s `verify_truncated_left`).

use base64::Engine as _;
use hmac::{KeyInit, Mac};

/// A signing pair, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyPair {
    pub tenant: String,
    pub key: Vec<u8>,
    pub salt: Vec<u8>,
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a signature was refused (all 403).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature is not unpadded URL-safe base64")]
    Encoding,
    #[error("signature does not match")]
    Mismatch,
    #[error(
        "the signature segment `{0}` looks like a processing option; did the URL forget its signature?"
    )]
    LooksLikeOption(String),
}

/// Who a verified signature belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// Signing is off; the signature segment was not checked.
    Unsigned,
    /// A configured trusted signature string.
    Trusted,
    /// The tenant of the key pair that verified it.
    Tenant(String),
}

impl Signer {
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Signer::Tenant(t) => Some(t),
            _ => None,
        }
    }
}

fn mac(pair: &KeyPair, path: &str) -> HmacSha256 {
    // HMAC accepts keys of any length.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(&pair.key).expect("HMAC takes any key");
    m.update(&pair.salt);
    m.update(path.as_bytes());
    m
}

/// Signs `path` (everything after the signature segment, leading `/` included).
pub fn sign(pair: &KeyPair, path: &str, size: usize) -> String {
    let full = mac(pair, path).finalize().into_bytes();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&full[..size.clamp(1, 32)])
}

/// Checks `signature` for `path` against every pair.
pub fn verify(
    signature: &str,
    path: &str,
    pairs: &[KeyPair],
    size: usize,
    trusted: &[String],
) -> Result<Signer, SignatureError> {
    if pairs.is_empty() {
        if signature.contains(':') {
            return Err(SignatureError::LooksLikeOption(signature.to_string()));
        }
        return Ok(Signer::Unsigned);
    }
    if trusted.iter().any(|t| t == signature) {
        return Ok(Signer::Trusted);
    }
    let given = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| SignatureError::Encoding)?;
    // The length must be exactly the configured size: a full signature fails on a server set
    // to 8 bytes and the reverse, as in imgproxy.
    if given.len() != size {
        return Err(SignatureError::Mismatch);
    }
    for pair in pairs {
        if mac(pair, path).verify_truncated_left(&given).is_ok() {
            return Ok(Signer::Tenant(pair.tenant.clone()));
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(tenant: &str, key: &str, salt: &str) -> KeyPair {
        KeyPair {
            tenant: tenant.into(),
            key: hex::decode(key).unwrap(),
            salt: hex::decode(salt).unwrap(),
        }
    }

    const B_KEY: &str = "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881";
    const B_SALT: &str = "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5";

    /// Digest §1.3: (key, salt, path, signature, size).
    pub(crate) const VECTORS: &[(&str, &str, &str, &str, usize)] = &[
        (
            "736563726574",
            "68656C6C6F",
            "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png",
            "oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8",
            32,
        ),
        (
            B_KEY,
            B_SALT,
            "/rs:fit:300:300/plain/http://img.example.com/pretty/image.jpg",
            "m3k5QADfcKPDj-SDI2AIogZbC3FlAXszuwhtWXYqavc",
            32,
        ),
        (
            B_KEY,
            B_SALT,
            "/rs:fit:300:300/plain/http://img.example.com/pretty/image.jpg",
            "m3k5QADfcKM",
            8,
        ),
        (
            "4aca92a7c3c68440f2c1db980c856f39",
            "6c28d7a545acc92d688d5f1d3e21087a",
            "/ar:t/cb:clear/ex:t/f:webp/g:noea:10:10/sa:10/w:300/plain/https://example.com/image.jpg",
            "-1bXMFE3qm-pOAgAomSBHIoNeIC9vYR6TZV5s3vkvLk",
            32,
        ),
        (
            "db66ae1b1b73fe2851ad789a673d1698",
            "bdfbf3df94315d0c2bc7a2ef691f5d99",
            "/ar:t/cb:clear/ex:t/f:webp/g:noea:10:10/sa:10/w:300/plain/https://example.com/image.jpg",
            "K-7vJsYBybwq33VIfpgm9uWUBB48BX6Y5ygsxP9hCY8",
            32,
        ),
        (
            B_KEY,
            B_SALT,
            "/el:t/f:png/g:no/h:300/rt:fit/w:300/aHR0cHM6Ly9leGFtcGxlLmNvbS9pbWFnZS5qcGc",
            "zsdsCjFCqcAniKFCygMBToRh6l5jVZbL0bhrnnUGK58",
            32,
        ),
        (
            B_KEY,
            B_SALT,
            "/aHR0cHM6Ly9leGFtcGxlLmNvbS9pbWFnZS5qcGc",
            "xOner18d7-LJwkl4bifXGbC1_4kZXxsPLnuuvsMtcWo",
            32,
        ),
        (
            "746573742d6b6579",
            "746573742d73616c74",
            "/rs:fill:4:4/plain/local:///test1.png",
            "My9d3xq_PYpVHsPrCyww0Kh1w5KZeZhIlWhsa4az1TI",
            32,
        ),
        (
            "746573742d6b6579",
            "746573742d73616c74",
            "/asd",
            "oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a20",
            32,
        ),
        (
            "746573742d6b6579",
            "746573742d73616c74",
            "/asd",
            "oWaL7QoW5Ts",
            8,
        ),
        (
            "746573742d6b6579",
            "746573742d73616c74",
            "asd",
            "dtLwhdnPPiu_epMl1LrzheLpvHas-4mwvY6L3Z8WwlY",
            32,
        ),
        (
            "746573742d6b6579",
            "746573742d73616c74",
            "asd",
            "dtLwhdnPPis",
            8,
        ),
        (
            "746573742d6b657932",
            "746573742d73616c7432",
            "/asd",
            "jYz1UZ7j1BCdSzH3pZhaYf0iuz0vusoOTdqJsUT6WXI",
            32,
        ),
        (
            "746573742d6b657932",
            "746573742d73616c7432",
            "asd",
            "jbDffNPt1-XBgDccsaE-XJB9lx8JIJqdeYIZKgOqZpg",
            32,
        ),
    ];

    #[test]
    fn digest_vectors_sign_and_verify() {
        for (key, salt, path, sig, size) in VECTORS {
            let p = pair("t", key, salt);
            assert_eq!(&sign(&p, path, *size), sig, "{path}");
            assert_eq!(
                verify(sig, path, std::slice::from_ref(&p), *size, &[]),
                Ok(Signer::Tenant("t".into()))
            );
        }
    }

    #[test]
    fn several_pairs_name_their_tenant() {
        let pairs = vec![
            pair("one", "746573742d6b6579", "746573742d73616c74"),
            pair("two", "746573742d6b657932", "746573742d73616c7432"),
        ];
        let sig = "jYz1UZ7j1BCdSzH3pZhaYf0iuz0vusoOTdqJsUT6WXI";
        assert_eq!(
            verify(sig, "/asd", &pairs, 32, &[]),
            Ok(Signer::Tenant("two".into()))
        );
        let sig = "oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a20";
        assert_eq!(
            verify(sig, "/asd", &pairs, 32, &[]),
            Ok(Signer::Tenant("one".into()))
        );
    }

    #[test]
    fn bad_signatures_are_refused() {
        let pairs = vec![pair("t", "746573742d6b6579", "746573742d73616c74")];
        let good = "oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a20";
        let mut flipped = good.to_string();
        flipped.replace_range(5..6, "X");
        assert_eq!(
            verify(&flipped, "/asd", &pairs, 32, &[]),
            Err(SignatureError::Mismatch)
        );
        let padded = format!("{good}=");
        assert_eq!(
            verify(&padded, "/asd", &pairs, 32, &[]),
            Err(SignatureError::Encoding)
        );
        // Full-size signature on a server set to 8 bytes, and the reverse.
        assert_eq!(
            verify(good, "/asd", &pairs, 8, &[]),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("oWaL7QoW5Ts", "/asd", &pairs, 32, &[]),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(good, "/asdf", &pairs, 32, &[]),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("insecure", "/asd", &pairs, 32, &[]),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("insecure", "/asd", &pairs, 32, &["insecure".into()]),
            Ok(Signer::Trusted)
        );
    }

    #[test]
    fn unsigned_mode_accepts_anything_but_an_option() {
        assert_eq!(verify("insecure", "/x", &[], 32, &[]), Ok(Signer::Unsigned));
        assert_eq!(verify("_", "/x", &[], 32, &[]), Ok(Signer::Unsigned));
        assert!(matches!(
            verify("rs:fit:10:10", "/x", &[], 32, &[]),
            Err(SignatureError::LooksLikeOption(_))
        ));
    }
}
