//! The console: the pages operators, store managers and guides use instead of `curl`.
//!
//! Pages are rendered on the server from templates compiled into the binary (askama),
//! with the project's own small script for live counts and buttons and its own
//! stylesheet; nothing is fetched from another host, so the console works offline and
//! on an intranet. A page reads through the same store, engine and scoping as the API,
//! and the script calls the API itself with the session cookie and the CSRF token, so
//! what a person may see and do in the console is exactly what their role may do
//! through the API.

pub mod i18n;
mod overview;
mod pages;
pub mod session;

use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERER, SET_COOKIE, X_FRAME_OPTIONS};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::http::App;
use crate::http::auth::{Caller, Scope};
use i18n::{Lang, Texts};
use session::SignedIn;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(overview::page))
        .route("/console/signin", get(signin_page).post(signin))
        .route("/console/signin/wecom", get(wecom_signin))
        .route("/console/signin/wecom/callback", get(wecom_callback))
        .route("/console/signout", post(signout))
        .route("/console/lang/{lang}", get(set_lang))
        .route("/console/customers", get(pages::customers))
        .route("/console/customers/{id}", get(pages::customer))
        .route("/console/customers/{id}/reveal", post(pages::reveal))
        .route("/console/segments", get(pages::segments))
        .route("/console/campaigns", get(pages::campaigns))
        .route("/console/campaigns/{id}", get(pages::campaign))
        .route("/console/tasks", get(pages::tasks))
        .route("/console/lost", get(pages::lost))
        .route("/console/audit", get(pages::audit))
        .route("/console/assets/{file}", get(asset))
}

/// A signed-in person on a console page: who they are, what they may see, and the
/// language and CSRF token the page is rendered with. Without a session, a page
/// answers with the sign-in page's address.
pub struct Viewer {
    pub caller: Caller,
    pub scope: Scope,
    pub csrf: String,
    pub lang: Lang,
}

impl Viewer {
    pub fn t(&self) -> &'static Texts {
        self.lang.texts()
    }

    /// `admin` or the staff userid, as the audit log names people.
    pub fn actor(&self) -> String {
        match &self.caller {
            Caller::Admin => "admin".into(),
            Caller::Staff { userid, .. } => userid.clone(),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.caller == Caller::Admin
    }
}

impl FromRequestParts<App> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Viewer, Response> {
        let to_signin = || Redirect::to(&format!("/console/signin?next={}", urlencoded(parts.uri.path()))).into_response();
        let signed_in = session::signed_in(app, &parts.headers).await.map_err(|e| internal(&e))?;
        let Some(SignedIn { caller, csrf }) = signed_in else { return Err(to_signin()) };
        // The scope as the API works it out (a manager's store from the staff record).
        parts.extensions.insert(caller.clone());
        let scope = Scope::from_request_parts(parts, app).await.map_err(IntoResponse::into_response)?;
        let lang = Lang::from_cookie(session::cookie(&parts.headers, "siyu_lang"));
        Ok(Viewer { caller, scope, csrf, lang })
    }
}

/// What every page's frame shows: the navigation for the viewer's role, who they are,
/// the language switch and the sign-out form.
pub struct Chrome {
    pub lang: &'static str,
    pub other_lang: &'static str,
    pub t: &'static Texts,
    pub csrf: String,
    pub who: String,
    pub title: String,
    pub nav: Vec<NavItem>,
}

pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub active: bool,
}

impl Chrome {
    pub fn new(v: &Viewer, title: &str, here: &str) -> Chrome {
        let t = v.t();
        let mut items: Vec<(&'static str, &'static str)> = Vec::new();
        if !matches!(v.scope, Scope::Guide(_)) {
            items.push(("/console", t.overview));
        }
        items.push(("/console/customers", t.customers));
        if v.is_admin() {
            items.push(("/console/segments", t.segments));
            items.push(("/console/campaigns", t.campaigns));
        }
        items.push(("/console/tasks", t.tasks));
        items.push(("/console/lost", t.lost_page));
        if v.is_admin() {
            items.push(("/console/audit", t.audit_log));
        }
        let who = match &v.caller {
            Caller::Admin => "admin".to_string(),
            Caller::Staff { userid, role } => format!("{userid} ({})", role.as_str()),
        };
        Chrome {
            lang: v.lang.code(),
            other_lang: v.lang.other(),
            t,
            csrf: v.csrf.clone(),
            who,
            title: title.to_string(),
            nav: items.into_iter().map(|(href, label)| NavItem { href, label, active: href == here }).collect(),
        }
    }
}

/// A rendered page, or the error page if the template failed. No other site may frame
/// a console page (its buttons reveal numbers and confirm sends).
pub fn render(page: impl Template) -> Response {
    match page.render() {
        Ok(html) => ([(CACHE_CONTROL, "no-store"), (X_FRAME_OPTIONS, "DENY"), (CONTENT_SECURITY_POLICY, "frame-ancestors 'none'")], Html(html)).into_response(),
        Err(e) => internal(&anyhow::anyhow!("rendering a page: {e}")),
    }
}

pub fn internal(e: &anyhow::Error) -> Response {
    tracing::error!(error = %format!("{e:#}"), "console page failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong; the server log has the details.").into_response()
}

/// A value made safe for a URL's query (or a cookie).
pub fn urlencoded(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Where to go after signing in: a console path only, never another site (nor a
/// header-breaking control character).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/console") && !n.contains("://") && !n.contains('\\') && !n.chars().any(char::is_control) => n.to_string(),
        _ => "/console".to_string(),
    }
}

// ---------- sign-in ----------

#[derive(Template)]
#[template(path = "console/signin.html")]
struct SigninPage {
    lang: &'static str,
    other_lang: &'static str,
    t: &'static Texts,
    error: Option<&'static str>,
    next: String,
    wecom: bool,
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
    error: Option<String>,
}

fn signin_response(app: &App, headers: &HeaderMap, next: String, error: Option<&'static str>, status: StatusCode) -> Response {
    let lang = Lang::from_cookie(session::cookie(headers, "siyu_lang"));
    // WeCom sign-in needs the self-built app (its agent id) the code is exchanged through.
    let wecom = app.wecom_client().is_some_and(|c| c.agent_id.is_some());
    let page = SigninPage { lang: lang.code(), other_lang: lang.other(), t: lang.texts(), error, next, wecom };
    (status, render(page)).into_response()
}

async fn signin_page(State(app): State<App>, headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    let t = Lang::from_cookie(session::cookie(&headers, "siyu_lang")).texts();
    let error = match q.error.as_deref() {
        Some("wecom") => Some(t.wecom_failed),
        Some("not_staff") => Some(t.not_staff),
        _ => None,
    };
    signin_response(&app, &headers, safe_next(q.next.as_deref()), error, StatusCode::OK)
}

#[derive(Deserialize)]
struct SigninForm {
    username: String,
    password: String,
    next: Option<String>,
}

async fn signin(State(app): State<App>, headers: HeaderMap, axum::Form(form): axum::Form<SigninForm>) -> Response {
    let t = Lang::from_cookie(session::cookie(&headers, "siyu_lang")).texts();
    let next = safe_next(form.next.as_deref());
    // No session exists yet to carry a CSRF token: a sign-in posted from another site
    // is refused by its Origin.
    if !session::same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site sign-in refused").into_response();
    }
    match session::check_password(&app, form.username.trim(), &form.password).await {
        Ok(Ok(staff)) => {
            let method = format!("password:{}", form.username.trim());
            match session::start(&app, staff, method, session::behind_tls(&headers)).await {
                Ok(cookie) => ([(SET_COOKIE, cookie)], Redirect::to(&next)).into_response(),
                Err(e) => internal(&e),
            }
        }
        Ok(Err(session::Refused::Wrong)) => signin_response(&app, &headers, next, Some(t.wrong_password), StatusCode::UNAUTHORIZED),
        Ok(Err(session::Refused::Locked)) => signin_response(&app, &headers, next, Some(t.locked), StatusCode::TOO_MANY_REQUESTS),
        Err(e) => internal(&e),
    }
}

/// Sends the browser to WeCom: inside WeCom's own browser the OAuth2 page, elsewhere
/// the web-login QR code. The `state` is remembered in a short-lived cookie and must
/// come back unchanged.
async fn wecom_signin(State(app): State<App>, headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    let Some(client) = app.wecom_client() else { return Redirect::to("/console/signin").into_response() };
    let state = crate::secrets::random_token("").chars().take(24).collect::<String>();
    let host = headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1");
    let scheme = if session::behind_tls(&headers) { "https" } else { "http" };
    let back = format!("{scheme}://{host}/console/signin/wecom/callback");
    let inside_wecom = headers.get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok()).is_some_and(|ua| ua.contains("wxwork"));
    let url = client.sign_in_url(&back, &state, client.agent_id, inside_wecom);
    let next = safe_next(q.next.as_deref());
    let cookie = format!("siyu_oauth={state}|{}; Path=/console/signin; HttpOnly; SameSite=Lax; Max-Age=600", urlencoded(&next));
    (StatusCode::SEE_OTHER, [(LOCATION, url), (SET_COOKIE, cookie)]).into_response()
}

#[derive(Deserialize)]
struct OauthBack {
    code: Option<String>,
    state: Option<String>,
}

async fn wecom_callback(State(app): State<App>, headers: HeaderMap, Query(q): Query<OauthBack>) -> Response {
    let failed = |why: &str| Redirect::to(&format!("/console/signin?error={why}")).into_response();
    let Some(client) = app.wecom_client() else { return failed("wecom") };
    let remembered = session::cookie(&headers, "siyu_oauth").unwrap_or_default().to_string();
    let (state, next) = remembered.split_once('|').unwrap_or((remembered.as_str(), "/console"));
    let (Some(code), Some(sent_state)) = (q.code, q.state) else { return failed("wecom") };
    if state.is_empty() || !crate::secrets::constant_time_eq(state, &sent_state) {
        return failed("wecom");
    }
    let userid = match client.user_of_code(&code).await {
        Ok(Some(u)) => u,
        Ok(None) => return failed("not_staff"),
        Err(e) => {
            tracing::warn!(error = %e, "WeCom sign-in: the code exchange failed");
            return failed("wecom");
        }
    };
    let u = userid.clone();
    let staff = match app.store.run(move |db| Box::pin(async move { siyu_store::org::get_staff(db, &u).await })).await {
        Ok(s) => s,
        Err(e) => return internal(&e.into()),
    };
    if staff.is_none() {
        return failed("not_staff");
    }
    let next = safe_next(Some(&percent_encoding::percent_decode_str(next).decode_utf8_lossy()));
    match session::start(&app, Some(userid), "wecom".into(), session::behind_tls(&headers)).await {
        Ok(cookie) => {
            let clear = "siyu_oauth=; Path=/console/signin; HttpOnly; SameSite=Lax; Max-Age=0".to_string();
            let mut r = Redirect::to(&next).into_response();
            r.headers_mut().append(SET_COOKIE, cookie.parse().expect("cookie header"));
            r.headers_mut().append(SET_COOKIE, clear.parse().expect("cookie header"));
            r
        }
        Err(e) => internal(&e),
    }
}

/// A form that changes something: its CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: Option<String>,
}

async fn signout(State(app): State<App>, headers: HeaderMap, axum::Form(form): axum::Form<CsrfForm>) -> Response {
    if let Ok(Some(s)) = session::signed_in(&app, &headers).await
        && !session::csrf_ok(&axum::http::Method::POST, &headers, &s.csrf, form.csrf.as_deref())
    {
        return (StatusCode::FORBIDDEN, "the form is stale; reload the page").into_response();
    }
    if let Err(e) = session::end(&app, &headers).await {
        return internal(&e);
    }
    let clear = session::session_cookie("", session::behind_tls(&headers), Some(std::time::Duration::ZERO));
    ([(SET_COOKIE, clear)], Redirect::to("/console/signin")).into_response()
}

async fn set_lang(headers: HeaderMap, Path(lang): Path<String>) -> Response {
    let lang = if lang == "en" { "en" } else { "zh" };
    let back = headers.get(REFERER).and_then(|v| v.to_str().ok()).and_then(|r| r.find("/console").map(|i| r[i..].to_string()));
    let cookie = format!("siyu_lang={lang}; Path=/; SameSite=Lax; Max-Age=31536000");
    ([(SET_COOKIE, cookie)], Redirect::to(&safe_next(back.as_deref()))).into_response()
}

// ---------- assets ----------

const CSS: &str = include_str!("../../../assets/console.css");
const JS: &str = include_str!("../../../assets/console.js");

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(CONTENT_TYPE, kind), (CACHE_CONTROL, "public, max-age=300")], body).into_response()
}
