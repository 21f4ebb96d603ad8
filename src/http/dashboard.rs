//! The facility dashboard: one page and its script, style sheet and icon, compiled into the binary.
//!
//! The page needs no token; every data call it makes does (the token is kept in the browser's session storage and
//! sent as a bearer header, so there is no cookie to ride on and no CSRF surface). The strict policy below allows
//! nothing but this origin: no inline script or style, no other host, no framing.

use hyper::StatusCode;
use hyper::header::{self, HeaderValue};

use super::response::{Body, full};

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");
const ICON: &str = include_str!("dashboard/favicon.svg");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                      base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The asset at `path` (`/`, `/dashboard.js`, …), or `None` when the path is not one of the dashboard's.
pub fn asset(path: &str, env_label: &str) -> Option<(&'static str, hyper::Response<Body>)> {
    let (label, content_type, body): (&'static str, &'static str, String) = match path {
        "/" | "/index.html" => ("/", "text/html; charset=utf-8", page(env_label)),
        "/dashboard.js" => ("/dashboard.js", "text/javascript; charset=utf-8", SCRIPT.into()),
        "/dashboard.css" => ("/dashboard.css", "text/css; charset=utf-8", STYLE.into()),
        "/favicon.svg" | "/favicon.ico" => ("/favicon.svg", "image/svg+xml", ICON.into()),
        _ => return None,
    };
    let mut r = full(StatusCode::OK, content_type, body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The assets change only with the binary; revalidating costs a round trip on the LAN, never stale code.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some((label, r))
}

/// The page with this gateway's version and environment label filled in (escaped: the label comes from config).
fn page(env_label: &str) -> String {
    PAGE.replace("{{VERSION}}", env!("CARGO_PKG_VERSION")).replace("{{ENV}}", &super::docs::esc(env_label))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_served_under_a_strict_policy_and_reference_nothing_outside_the_origin() {
        for path in ["/", "/dashboard.js", "/dashboard.css", "/favicon.svg"] {
            let (_, r) = asset(path, "prod").unwrap_or_else(|| panic!("{path}"));
            assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], POLICY);
        }
        assert!(asset("/nope.js", "prod").is_none());
        for text in [PAGE, SCRIPT, STYLE, ICON] {
            for forbidden in ["http://", "https://", "//cdn", "@import", "eval(", "innerHTML", "style=\""] {
                // The SVG's XML namespace is an identifier, not a request.
                let text = text.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
                assert!(!text.contains(forbidden), "{forbidden}");
            }
        }
        // No inline script or style: the policy would refuse it, so it must not exist.
        assert!(!PAGE.contains("<script>") && !PAGE.contains("<style"));
    }

    #[test]
    fn the_environment_label_is_escaped() {
        let p = page("lab <b>\"x\"</b>");
        assert!(p.contains("lab &lt;b&gt;&quot;x&quot;&lt;/b&gt;"), "{p}");
        assert!(!p.contains("{{"));
    }
}
