//! Method and path → the [`Route`] that serves them: the one place that knows pixgate's URL
//! space (`/health`, `/version`, `/info/…`, `POST /upload/…`, `/upload/result/…`, and every other path
//! as an imgproxy transform URL).

use hyper::Method;

use crate::metrics;

/// Path prefix of the short-lived URLs of uploaded results.
pub const UPLOAD_RESULT: &str = "/upload/result/";

/// What a request asks for; the `&str`s are the part of the target its handler parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Health,
    /// `GET /version`: version and git commit.
    Version,
    /// The whole target (path and query): an imgproxy URL.
    Transform(&'a str),
    /// The target after `/info`.
    Info(&'a str),
    /// `POST`: the target after `/upload`.
    Upload(&'a str),
    /// The path after [`UPLOAD_RESULT`]: `{route}/{id}.{ext}`.
    UploadResult(&'a str),
    NotFound,
}

/// The route of `method` and `target` (path and query, as sent).
pub fn route<'a>(method: &Method, target: &'a str) -> Route<'a> {
    let path = target.split('?').next().unwrap_or_default();
    let read = *method == Method::GET || *method == Method::HEAD;
    match path {
        "/health" if read => Route::Health,
        "/version" if read => Route::Version,
        p if read && p.starts_with(UPLOAD_RESULT) => Route::UploadResult(&p[UPLOAD_RESULT.len()..]),
        p if *method == Method::POST && p.starts_with("/upload/") => {
            Route::Upload(&target["/upload".len()..])
        }
        // Browsers ask for these on their own; they are not image URLs.
        "/" | "/favicon.ico" => Route::NotFound,
        p if read && p.starts_with("/info/") => Route::Info(&target["/info".len()..]),
        _ if read => Route::Transform(target),
        _ => Route::NotFound,
    }
}

impl Route<'_> {
    /// The `route` label of the request metrics.
    pub fn label(self) -> metrics::Route {
        match self {
            Route::Health | Route::Version => metrics::Route::Health,
            Route::Transform(_) => metrics::Route::Transform,
            Route::Info(_) => metrics::Route::Info,
            Route::Upload(_) | Route::UploadResult(_) => metrics::Route::Upload,
            Route::NotFound => metrics::Route::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let get = Method::GET;
        assert_eq!(route(&get, "/health"), Route::Health);
        assert_eq!(route(&Method::HEAD, "/health"), Route::Health);
        assert_eq!(route(&Method::POST, "/health"), Route::NotFound);
        assert_eq!(route(&get, "/version"), Route::Version);
        assert_eq!(
            route(&get, "/insecure/rs:fit:10:10/plain/local:///a.jpg?x=1"),
            Route::Transform("/insecure/rs:fit:10:10/plain/local:///a.jpg?x=1")
        );
        assert_eq!(
            route(&get, "/info/insecure/plain/local:///a.jpg"),
            Route::Info("/insecure/plain/local:///a.jpg")
        );
        assert_eq!(
            route(&Method::POST, "/upload/insecure/rs:fit:10:10?key=k"),
            Route::Upload("/insecure/rs:fit:10:10?key=k")
        );
        assert_eq!(
            route(&get, "/upload/insecure/x"),
            Route::Transform("/upload/insecure/x")
        );
        assert_eq!(
            route(&get, "/upload/result/r/abc.webp"),
            Route::UploadResult("r/abc.webp")
        );
        assert_eq!(route(&get, "/"), Route::NotFound);
        assert_eq!(route(&get, "/favicon.ico"), Route::NotFound);
        assert_eq!(route(&Method::DELETE, "/insecure/plain/x"), Route::NotFound);
        assert_eq!(route(&Method::POST, "/insecure/plain/x"), Route::NotFound);
        assert_eq!(route(&get, "/info"), Route::Transform("/info"));
    }
}
