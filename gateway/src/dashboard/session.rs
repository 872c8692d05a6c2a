//! Signing in and out, and who is signed in. The session is a random token
//! in an HttpOnly, SameSite=Strict cookie (Secure behind TLS), checked by the
//! extension on every request; every form carries the session's own token
//! (CSRF), and the sign-in form a token of its own kept in a cookie beside it.

use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::layout::{self, error_page};
use super::queries;
use super::throttle::Refusal;
use crate::error::ApiError;
use crate::state::AppState;

const SESSION_COOKIE: &str = "payments_dashboard";
const SIGN_IN_COOKIE: &str = "payments_dashboard_sign_in";
/// How long a session lasts from sign-in.
const SESSION_TTL: &str = "12 hours";

/// The person signed in, as the extension knows them now.
pub struct Session {
    pub user_id: String,
    pub email: String,
    pub role: String,
    /// The token every form of this session carries.
    pub csrf: String,
    token: String,
}

impl Session {
    pub fn is_operator(&self) -> bool {
        self.role == payments_core::vocabulary::DASHBOARD_OPERATOR
    }

    /// Why a form is refused, if it is: its token must be this session's, which another site cannot know.
    pub fn form_refusal(&self, token: &str) -> Option<Response> {
        if bool::from(self.csrf.as_bytes().ct_eq(token.as_bytes())) {
            None
        } else {
            Some(layout::message_page(
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form does not belong to your session. Go back, reload the page and try again.",
            ))
        }
    }
}

impl FromRequestParts<AppState> for Session {
    /// To the sign-in page (and back here after it) when no session is live.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let back = || {
            let next = return_to(&parts.method, parts.uri.path_and_query().map_or("/dashboard", |p| p.as_str()));
            let query = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
            Redirect::to(&format!("/dashboard/sign-in?{query}")).into_response()
        };
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else { return Err(back()) };
        let db = state.pool.get().await.map_err(|e| error_page(e.into()))?;
        let stmt = db.prepare_cached(queries::SESSION).await.map_err(|e| error_page(e.into()))?;
        let row = db.query_opt(&stmt, &[&token]).await.map_err(|e| error_page(e.into()))?;
        let Some(row) = row else { return Err(back()) };
        Ok(Session {
            user_id: row.get("user_id"),
            email: row.get("user_email"),
            role: row.get("user_role"),
            csrf: row.get("csrf_token"),
            token,
        })
    }
}

#[derive(Deserialize)]
pub struct SignInQuery {
    next: Option<String>,
}

pub async fn sign_in_page(headers: HeaderMap, Query(q): Query<SignInQuery>) -> Response {
    let token = match payments_core::id::new_token("si") {
        Ok(t) => t,
        Err(e) => return error_page(ApiError::Internal(e.to_string())),
    };
    let cookie = set_cookie(&headers, SIGN_IN_COOKIE, &token, "/dashboard/sign-in", Some(600));
    let page = form_page(StatusCode::OK, &token, q.next.as_deref(), None);
    ([(header::SET_COOKIE, cookie)], page).into_response()
}

#[derive(Deserialize)]
pub struct SignIn {
    email: String,
    password: String,
    csrf: String,
    next: Option<String>,
}

pub async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(form.csrf.as_bytes())) {
        return layout::message_page(
            StatusCode::FORBIDDEN,
            "Form expired",
            "The sign-in form expired. Open the sign-in page again.",
        );
    }
    let email = form.email.trim().to_lowercase();
    let refuse = |status, why| form_page(status, &expected, form.next.as_deref(), Some(why));
    let attempt = match state.sign_ins.begin(peer.ip(), &email) {
        Ok(attempt) => attempt,
        Err(Refusal::Locked) => {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many wrong passwords for this email from here: try again in 15 minutes.",
            )
        }
        Err(Refusal::Busy) => {
            return refuse(StatusCode::TOO_MANY_REQUESTS, "Too many sign-ins at this moment: try again shortly.")
        }
    };
    let signed_in = async {
        let db = state.pool.get().await?;
        let stmt = db.prepare_cached(queries::SIGN_IN).await?;
        Ok::<_, ApiError>(db.query_one(&stmt, &[&email, &form.password, &SESSION_TTL]).await?)
    }
    .await;
    match signed_in {
        Ok(row) => {
            attempt.succeeded();
            let token: String = row.get("session_token");
            let cookie = set_cookie(&headers, SESSION_COOKIE, &token, "/dashboard", None);
            let clear = set_cookie(&headers, SIGN_IN_COOKIE, "", "/dashboard/sign-in", Some(0));
            let to = safe_next(form.next.as_deref());
            let mut response = Redirect::to(to).into_response();
            response.headers_mut().append(header::SET_COOKIE, cookie);
            response.headers_mut().append(header::SET_COOKIE, clear);
            response
        }
        Err(e) if e.code() == "sign_in_failed" => {
            tracing::info!("dashboard sign-in refused");
            refuse(StatusCode::UNAUTHORIZED, "Email or password is wrong.")
        }
        Err(e) => error_page(e),
    }
}

#[derive(Deserialize)]
pub struct SignOut {
    csrf: String,
}

pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<SignOut>,
) -> Response {
    if let Some(refused) = session.form_refusal(&form.csrf) {
        return refused;
    }
    let ended = async {
        let db = state.pool.get().await?;
        let stmt = db.prepare_cached(queries::SIGN_OUT).await?;
        db.execute(&stmt, &[&session.token]).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(e) = ended {
        return error_page(e);
    }
    let clear = set_cookie(&headers, SESSION_COOKIE, "", "/dashboard", Some(0));
    ([(header::SET_COOKIE, clear)], Redirect::to("/dashboard/sign-in")).into_response()
}

fn form_page(status: StatusCode, token: &str, next: Option<&str>, problem: Option<&str>) -> Response {
    let body = html! {
        h1 { "Sign in" }
        @if let Some(problem) = problem { p.notice.error role="alert" { (problem) } }
        form.sign-in method="post" action="/dashboard/sign-in" {
            input type="hidden" name="csrf" value=(token);
            input type="hidden" name="next" value=(safe_next(next));
            label for="email" { "Email" }
            input #email type="email" name="email" autocomplete="username" required autofocus maxlength="254";
            label for="password" { "Password" }
            input #password type="password" name="password" autocomplete="current-password" required maxlength="1024";
            button type="submit" { "Sign in" }
        }
    };
    (status, layout::page("Sign in", None, body)).into_response()
}

/// Where to go after signing in: a dashboard path (printable ASCII, so it
/// makes a valid Location header), never another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with("/dashboard")
                && !n.contains("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n
        }
        _ => "/dashboard",
    }
}

/// Where a signed-out request comes back to after signing in: the page
/// itself, or for a form (a POST, which a redirect cannot repeat) the payment
/// it was about, else the overview.
fn return_to<'a>(method: &axum::http::Method, path: &'a str) -> &'a str {
    if method == axum::http::Method::GET {
        return path;
    }
    match path.strip_prefix("/dashboard/payments/").and_then(|rest| rest.split_once('/')) {
        Some((id, _)) => &path[.."/dashboard/payments/".len() + id.len()],
        None => "/dashboard",
    }
}

/// The value of cookie `name` in the request's Cookie headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// A cookie scripts cannot read and other sites never send; Secure when the
/// request reached us over TLS (a proxy in front says so in X-Forwarded-Proto).
fn set_cookie(headers: &HeaderMap, name: &str, value: &str, path: &str, max_age: Option<u32>) -> HeaderValue {
    let tls =
        headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if tls {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_out_form_comes_back_to_its_payment() {
        use axum::http::Method;
        assert_eq!(return_to(&Method::GET, "/dashboard/refunds?x=1"), "/dashboard/refunds?x=1");
        assert_eq!(return_to(&Method::POST, "/dashboard/payments/pay_1/refund"), "/dashboard/payments/pay_1");
        assert_eq!(return_to(&Method::POST, "/dashboard/sign-out"), "/dashboard");
    }

    #[test]
    fn next_stays_on_the_dashboard() {
        assert_eq!(safe_next(Some("/dashboard/payments?status=failed")), "/dashboard/payments?status=failed");
        for bad in [
            None,
            Some("https://evil.example"),
            Some("//evil.example"),
            Some("/dashboard//evil"),
            Some("/v1/payments"),
            Some("/dashboard\\x"),
            Some("/dashboard\n"),
        ] {
            assert_eq!(safe_next(bad), "/dashboard", "{bad:?}");
        }
    }

    #[test]
    fn cookies_are_found_by_exact_name_and_are_strict_and_http_only() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; payments_dashboard_sign_in=x; payments_dashboard=tok"));
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie(&h, SIGN_IN_COOKIE).as_deref(), Some("x"));
        assert_eq!(cookie(&h, "b"), None);
        let plain = set_cookie(&h, SESSION_COOKIE, "tok", "/dashboard", None);
        assert_eq!(plain, "payments_dashboard=tok; Path=/dashboard; HttpOnly; SameSite=Strict");
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(set_cookie(&h, SESSION_COOKIE, "tok", "/dashboard", None).to_str().unwrap().ends_with("; Secure"));
    }
}
