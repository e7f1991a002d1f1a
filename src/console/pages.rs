//! The console's request handlers: who asks (a session, or the trusted proxy's header), what
//! their role lets them do, and the page or the redirect that answers.
//!
//! Forms are read from the raw body whatever its declared type, so that a post without the
//! session's CSRF token is refused with 403 however it was made; a browser's
//! `Sec-Fetch-Site: cross-site` is refused too. Passwords go to Argon2 and nowhere else: no log
//! line, no audit entry and no page carries one.

use std::collections::HashMap;
use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use bytes::Bytes;
use tracing::{info, warn};

use super::auth::{self, Role, SessionAge, THROTTLE};
use super::views::{self, Head};
use super::{AuthMode, Console, labels};
use crate::clock::now;
use crate::engine::EngineError;
use crate::clock::now_millis;
use crate::store::{Decision, StoreError};

/// Why a request is not answered with its page.
#[derive(Debug)]
pub(super) enum Failure {
    /// No valid session: to the login page.
    Login,
    /// Not allowed: no valid CSRF token, a role that does not decide, an untrusted proxy.
    Forbidden(&'static str),
    NotFound,
    /// The store or a template failed; logged, not shown.
    Internal(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        match e {
            StoreError::NoPlan(_) => Failure::NotFound,
            other => Failure::Internal(crate::error_chain(&other)),
        }
    }
}

impl From<auth::AuthError> for Failure {
    fn from(e: auth::AuthError) -> Failure {
        Failure::Internal(e.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Login => Redirect::to("/login").into_response(),
            Failure::Forbidden(why) => (StatusCode::FORBIDDEN, format!("403 Forbidden: {why}\n")).into_response(),
            Failure::NotFound => (StatusCode::NOT_FOUND, "404 Not Found\n").into_response(),
            Failure::Internal(e) => {
                tracing::error!("Console: {e}");
                (StatusCode::INTERNAL_SERVER_ERROR, "500: the console could not answer; rocsync's log says why\n").into_response()
            }
        }
    }
}

/// Who is asking.
pub(super) struct Viewer {
    pub name: String,
    pub role: Role,
    pub csrf: String,
    /// The address the request came from (the client's, behind a trusted proxy).
    pub address: String,
    /// A session just opened for a proxy's user: its cookie goes with the answer.
    pub set_cookie: Option<HeaderValue>,
}

impl Viewer {
    /// How the audit log names this person: `console:marie (rssi) from 198.18.1.2`.
    fn actor(&self) -> String {
        format!("console:{} ({}) from {}", self.name, self.role.as_str(), self.address)
    }
}

/// The fields of a posted form (`application/x-www-form-urlencoded`), or of a query string. A
/// missing field reads as empty.
struct Fields(HashMap<String, String>);

impl Fields {
    fn parse(body: &[u8]) -> Fields {
        Fields(url::form_urlencoded::parse(body).into_owned().collect())
    }

    fn get(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or("")
    }
}

/// Whether the browser says that another site made this request.
fn cross_site(headers: &HeaderMap) -> bool {
    headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
}

/// A posted form is taken only with the session's CSRF token, and not from another site.
fn check_form(headers: &HeaderMap, form: &Fields, viewer: &Viewer) -> Result<(), Failure> {
    if cross_site(headers) {
        return Err(Failure::Forbidden("a form posted from another site"));
    }
    if !auth::same_token(form.get("csrf"), &viewer.csrf) {
        warn!(account = %viewer.name, address = %viewer.address, "Console: a form without the session's CSRF token was refused.");
        return Err(Failure::Forbidden("the form's CSRF token is missing or wrong: reload the page"));
    }
    Ok(())
}

/// The last address of `X-Forwarded-For`: the one the trusted proxy added.
fn forwarded_for(headers: &HeaderMap) -> Option<String> {
    let value = headers.get_all("x-forwarded-for").iter().last()?.to_str().ok()?;
    let ip: std::net::IpAddr = value.rsplit(',').next()?.trim().parse().ok()?;
    Some(ip.to_canonical().to_string())
}

/// The `Set-Cookie` value of a session: random, `HttpOnly`, `SameSite=Strict`, `Secure` over
/// TLS, for the whole console, gone when the browser closes (the console ends it sooner).
fn session_cookie(name: &'static str, id: &str, secure: bool) -> Result<HeaderValue, Failure> {
    let cookie = Cookie::build((name, id.to_owned())).path("/").http_only(true).same_site(SameSite::Strict).secure(secure).build();
    HeaderValue::from_str(&cookie.to_string()).map_err(|e| Failure::Internal(e.to_string()))
}

/// The `Set-Cookie` value that removes the session cookie.
fn removal_cookie(name: &'static str, secure: bool) -> Result<HeaderValue, Failure> {
    let cookie = Cookie::build((name, ""))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(time::Duration::ZERO)
        .build();
    HeaderValue::from_str(&cookie.to_string()).map_err(|e| Failure::Internal(e.to_string()))
}

fn render<T: Template>(page: &T) -> Result<String, Failure> {
    page.render().map_err(|e| Failure::Internal(format!("a console page could not be made: {e}")))
}

/// `response`, with the cookie of a session just opened for the viewer.
fn answer(viewer: &Viewer, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    if let Some(cookie) = &viewer.set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie.clone());
    }
    response
}

impl Console {
    fn t(&self) -> &'static labels::Labels {
        labels::of(&self.inner.lang)
    }

    fn head(&self, viewer: &Viewer, title: String, section: &'static str) -> Head {
        let lang = &self.inner.lang;
        Head {
            t: labels::of(lang),
            lang: labels::code(lang),
            title,
            user: viewer.name.clone(),
            role: viewer.role.label(lang),
            csrf: viewer.csrf.clone(),
            may_decide: viewer.role.may_decide(),
            section,
        }
    }

    /// The person behind a request: its session (local accounts), or the trusted proxy's
    /// header for an account of that name (a session is opened for it). [`Failure::Login`]
    /// when there is none.
    async fn viewer(&self, headers: &HeaderMap, peer: SocketAddr) -> Result<Viewer, Failure> {
        let settings = &self.inner.settings;
        let cookie = CookieJar::from_headers(headers).get(self.cookie_name()).map(|c| c.value().to_owned()).filter(|v| auth::is_token(v));
        match settings.auth {
            AuthMode::Local => {
                let Some(id) = cookie else { return Err(Failure::Login) };
                self.session(id, peer.ip().to_string()).await?.ok_or(Failure::Login)
            }
            AuthMode::Proxy => {
                if !super::trusted(&settings.trusted_proxies, peer.ip()) {
                    warn!(peer = %peer.ip(), "Console: a request that did not come through a trusted proxy was refused.");
                    return Err(Failure::Forbidden("the console takes requests from its trusted proxies only (console.trusted_proxies)"));
                }
                // One value exactly: a proxy that appends the header would leave the client's
                // forged one first.
                let values: Vec<&HeaderValue> = headers.get_all(&settings.proxy_user_header).iter().collect();
                if values.len() > 1 {
                    return Err(Failure::Forbidden("the proxy's user header came more than once"));
                }
                let named = values.first().and_then(|v| v.to_str().ok()).unwrap_or("");
                let Ok(name) = auth::account_name(named) else {
                    return Err(Failure::Forbidden("the proxy named no account"));
                };
                let address = forwarded_for(headers).unwrap_or_else(|| peer.ip().to_string());
                if let Some(id) = cookie {
                    if let Some(viewer) = self.session(id, address.clone()).await? {
                        if viewer.name == name {
                            return Ok(viewer);
                        }
                    }
                }
                match self.open_session(name.clone(), address.clone()).await? {
                    Some(viewer) => Ok(viewer),
                    None => {
                        warn!(account = %name, address = %address, "Console: the proxy's user has no account; refused.");
                        Err(Failure::Forbidden("the proxy's user has no account in rocsync (rocsync user add)"))
                    }
                }
            }
        }
    }

    /// The session whose id is `id`, when it is still valid; its idle time starts again. An
    /// idle or too old one is ended.
    async fn session(&self, id: String, address: String) -> Result<Option<Viewer>, Failure> {
        let (idle, max) = (self.inner.settings.session_idle, self.inner.settings.session_max);
        self.blocking(move |engine| {
            let key = auth::session_key(&id)?;
            let Some(row) = engine.store.session(&key)? else { return Ok(None) };
            let now_ms = now_millis();
            if auth::session_age(row.created_ms, row.seen_ms, now_ms, idle, max) != SessionAge::Fresh {
                engine.store.end_session(&key)?;
                info!(account = %row.user, "Console session ended: unused too long, or open too long.");
                return Ok(None);
            }
            let Some(role) = Role::parse(&row.role) else { return Ok(None) };
            engine.store.touch_session(&key, now_ms)?;
            Ok(Some(Viewer { name: row.user, role, csrf: row.csrf, address, set_cookie: None }))
        })
        .await
    }

    /// Opens a session for account `name`, if there is one: its viewer, with the cookie to
    /// set. Audited `console.login`; expired sessions are purged on the way.
    async fn open_session(&self, name: String, address: String) -> Result<Option<Viewer>, Failure> {
        let (cookie_name, secure) = (self.cookie_name(), self.inner.settings.tls.is_some());
        let (idle, max) = (self.inner.settings.session_idle, self.inner.settings.session_max);
        let proxied = self.inner.settings.auth == AuthMode::Proxy;
        self.blocking(move |engine| {
            let Some(role) = engine.store.user_role(&name)?.as_deref().and_then(Role::parse) else { return Ok(None) };
            let now_ms = now_millis();
            let (seen_after, created_after) = (now_ms.saturating_sub(idle.as_millis() as u64), now_ms.saturating_sub(max.as_millis() as u64));
            engine.store.end_expired_sessions(seen_after, created_after)?;
            // Behind the proxy, a client that sent no cookie goes on in its live session (no new
            // session, no new audit line at every request).
            if proxied {
                if let Some((key, csrf)) = engine.store.recent_session(&name, &address, seen_after, created_after)? {
                    engine.store.touch_session(&key, now_ms)?;
                    return Ok(Some(Viewer { name, role, csrf, address, set_cookie: None }));
                }
            }
            let (id, csrf) = (auth::random_token()?, auth::random_token()?);
            engine.store.create_session(&auth::session_key(&id)?, &name, &csrf, now_ms, &address)?;
            let viewer = Viewer { name, role, csrf, address, set_cookie: Some(session_cookie(cookie_name, &id, secure)?) };
            engine.store.audit(&viewer.actor(), "console.login", None, "session opened", &now())?;
            Ok(Some(viewer))
        })
        .await
    }

    /// What was asked cannot be done (a plan no longer open): said on a page of its own (409).
    fn refused(&self, text: String, back: String) -> Result<Response, Failure> {
        let lang = &self.inner.lang;
        let page = views::MessagePage { t: labels::of(lang), lang: labels::code(lang), text, back };
        Ok((StatusCode::CONFLICT, Html(render(&page)?)).into_response())
    }

    fn login_form(&self, status: StatusCode, message: &str, username: &str) -> Result<Response, Failure> {
        let lang = &self.inner.lang;
        let page = views::LoginPage {
            t: labels::of(lang),
            lang: labels::code(lang),
            message: message.to_owned(),
            username: crate::text::excerpt(username, 64),
        };
        Ok((status, Html(render(&page)?)).into_response())
    }
}

pub(super) async fn login_page(State(c): State<Console>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Result<Response, Failure> {
    if c.inner.settings.auth == AuthMode::Proxy || c.viewer(&headers, peer).await.is_ok() {
        return Ok(Redirect::to("/").into_response());
    }
    c.login_form(StatusCode::OK, "", "")
}

/// `POST /login` (`username`, `password`): a session and a redirect to the dashboard, or the
/// login page again with one message for an unknown account and a wrong password alike.
/// After five failures under the account or the address, a minute between tries.
pub(super) async fn login(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    if c.inner.settings.auth == AuthMode::Proxy {
        return Err(Failure::NotFound);
    }
    if cross_site(&headers) {
        return Err(Failure::Forbidden("a login posted from another site"));
    }
    let form = Fields::parse(&body);
    let (typed, password) = (form.get("username").to_owned(), form.get("password").to_owned());
    let address = peer.ip().to_string();
    // A name that cannot be an account, or that no account has, is answered like any other,
    // and throttled under one shared key: what is typed there (a password, by mistake) is
    // neither kept nor logged.
    let name = auth::account_name(&typed).ok();
    let address_key = format!("address:{address}");
    let (looked_up, addr_key) = (name.clone(), address_key.clone());
    // Checked and counted in one step (the engine is behind a lock): an attempt counts as a
    // failure *before* its password is checked, so parallel guesses cannot all pass the
    // throttle before any of them is counted.
    let (wait, credentials, account_key, attempt_ms) = c
        .blocking(move |engine| {
            let credentials = match &looked_up {
                Some(name) => engine.store.user_credentials(name)?,
                None => None,
            };
            // Every valid name is counted under its own key, whether an account has it or not
            // (a shared key for unknown names would tell them apart), as a digest: what is typed
            // there is not kept.
            let account_key = match &looked_up {
                Some(name) => format!("account:{}", auth::session_key(name)?),
                None => "account:(not a name)".to_owned(),
            };
            let now_ms = now_millis();
            let since = now_ms.saturating_sub(THROTTLE.window.as_millis() as u64);
            let mut wait: Option<std::time::Duration> = None;
            for key in [&account_key, &addr_key] {
                wait = wait.max(THROTTLE.wait(&engine.store.login_failures(key, since)?, now_ms));
            }
            if wait.is_none() {
                engine.store.record_login_failure(&[&account_key, &addr_key], now_ms)?;
            }
            Ok((wait, credentials, account_key, now_ms))
        })
        .await?;
    let shown = if credentials.is_some() { name.clone().unwrap_or_default() } else { "(unknown)".to_owned() };
    if let Some(wait) = wait {
        warn!(account = %shown, address = %address, "Console login refused: too many failures; {} s to wait.", wait.as_secs());
        return c.login_form(StatusCode::TOO_MANY_REQUESTS, c.t().throttled, &typed);
    }
    let hash = credentials.as_ref().map(|(_, hash)| hash.clone());
    let verified = {
        let _slot = c.inner.hashing.acquire().await.map_err(|e| Failure::Internal(e.to_string()))?;
        tokio::task::spawn_blocking(move || auth::verify_or_decoy(&password, hash.as_deref()))
            .await
            .map_err(|e| Failure::Internal(e.to_string()))?
    };
    let role = credentials.as_ref().and_then(|(role, _)| Role::parse(role));
    let (Some(name), true, Some(_)) = (name, verified, role) else {
        warn!(account = %shown, address = %address, "Console login failed: unknown account or wrong password.");
        return c.login_form(StatusCode::UNAUTHORIZED, c.t().login_failed, &typed);
    };
    // A good login forgets the account's failures, and only this attempt of the address's:
    // an account of one's own must not switch off the limit on guessing others'.
    c.blocking(move |engine| {
        engine.store.clear_login_failures(&[&account_key], now_millis().saturating_sub(THROTTLE.window.as_millis() as u64))?;
        Ok(engine.store.forget_login_attempt(&address_key, attempt_ms)?)
    })
    .await?;
    let viewer = c.open_session(name.clone(), address.clone()).await?.ok_or(Failure::Login)?;
    info!(account = %name, address = %address, "Console login.");
    Ok(answer(&viewer, Redirect::to("/")))
}

/// `POST /logout`: ends the session.
pub(super) async fn logout(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    let viewer = c.viewer(&headers, peer).await?;
    check_form(&headers, &Fields::parse(&body), &viewer)?;
    let cookie = CookieJar::from_headers(&headers).get(c.cookie_name()).map(|cookie| cookie.value().to_owned());
    let actor = viewer.actor();
    c.blocking(move |engine| {
        if let Some(id) = cookie.filter(|v| auth::is_token(v)) {
            engine.store.end_session(&auth::session_key(&id)?)?;
        }
        Ok(engine.store.audit(&actor, "console.logout", None, "session ended", &now())?)
    })
    .await?;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(header::SET_COOKIE, removal_cookie(c.cookie_name(), c.inner.settings.tls.is_some())?);
    Ok(response)
}

pub(super) async fn dashboard(State(c): State<Console>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Result<Response, Failure> {
    let viewer = c.viewer(&headers, peer).await?;
    let (head, lang) = (c.head(&viewer, c.t().dashboard.to_owned(), "dashboard"), c.inner.lang.clone());
    let page = c.blocking(move |engine| Ok(views::dashboard(engine, head, &lang)?)).await?;
    Ok(answer(&viewer, Html(render(&page)?)))
}

pub(super) async fn plans(State(c): State<Console>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Result<Response, Failure> {
    let viewer = c.viewer(&headers, peer).await?;
    let (head, lang) = (c.head(&viewer, c.t().plans.to_owned(), "plans"), c.inner.lang.clone());
    let page = c.blocking(move |engine| Ok(views::plans(engine, head, &lang)?)).await?;
    Ok(answer(&viewer, Html(render(&page)?)))
}

/// `GET /plans/{id}`: the plan grouped by AMC, why it waits, its decisions, and for the RSSI
/// and the engineers the approve and reject forms (each with the session's CSRF token).
pub(super) async fn plan(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let viewer = c.viewer(&headers, peer).await?;
    let id: i64 = id.parse().map_err(|_| Failure::NotFound)?;
    let (head, lang) = (c.head(&viewer, format!("{} {id}", c.t().plan), "plans"), c.inner.lang.clone());
    let page = c.blocking(move |engine| Ok(views::plan(engine, head, id, &lang)?)).await?;
    Ok(answer(&viewer, Html(render(&page)?)))
}

pub(super) async fn approve(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Failure> {
    decide(c, peer, headers, id, body, Decision::Approve).await
}

pub(super) async fn reject(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Failure> {
    decide(c, peer, headers, id, body, Decision::Reject).await
}

/// `POST /plans/{id}/approve` and `…/reject` (`csrf`, `comment`): recorded as `rocsync
/// approve` records it while the daemon runs, by `console:NAME (ROLE) from ADDRESS`; the
/// daemon is told to apply an approval at once.
async fn decide(c: Console, peer: SocketAddr, headers: HeaderMap, id: String, body: Bytes, decision: Decision) -> Result<Response, Failure> {
    let viewer = c.viewer(&headers, peer).await?;
    let form = Fields::parse(&body);
    check_form(&headers, &form, &viewer)?;
    if !viewer.role.may_decide() {
        warn!(account = %viewer.name, role = viewer.role.as_str(), "Console: a decision by a role that does not decide was refused.");
        return Err(Failure::Forbidden("this account's role reads plans but does not approve or reject them"));
    }
    let id: i64 = id.parse().map_err(|_| Failure::NotFound)?;
    // Outside text like any other: one escaped line, cut at 2,000 bytes.
    let comment = crate::text::excerpt(form.get("comment").trim(), 2000);
    let comment = (!comment.is_empty()).then_some(comment);
    let actor = viewer.actor();
    let decided = c
        .blocking(move |engine| match engine.decide(id, decision, &actor, comment.as_deref(), false) {
            Ok(plan) => Ok(Ok(plan)),
            Err(EngineError::Store(StoreError::NoPlan(_))) => Err(Failure::NotFound),
            Err(EngineError::Store(e @ StoreError::WrongStatus { .. })) => Ok(Err(e.to_string())),
            Err(e) => Err(Failure::Internal(crate::error_chain(&e))),
        })
        .await?;
    match decided {
        Ok(plan) => {
            info!(plan = id, account = %viewer.name, status = %plan.status, "Plan decided in the console.");
            if decision == Decision::Approve {
                (c.inner.wake)();
            }
            Ok(answer(&viewer, Redirect::to(&format!("/plans/{id}"))))
        }
        Err(why) => c.refused(why, format!("/plans/{id}")),
    }
}

/// `POST /rollback` (`csrf`): proposes a plan back to the state before what is in force; it
/// waits for approval.
pub(super) async fn rollback(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    let viewer = c.viewer(&headers, peer).await?;
    check_form(&headers, &Fields::parse(&body), &viewer)?;
    if !viewer.role.may_decide() {
        return Err(Failure::Forbidden("this account's role does not propose rollbacks"));
    }
    let actor = viewer.actor();
    let proposed = c
        .blocking(move |engine| match engine.rollback(None, &actor) {
            Ok(plan) => Ok(Ok(plan.id)),
            Err(EngineError::Rollback(why)) => Ok(Err(why)),
            Err(e) => Err(Failure::Internal(crate::error_chain(&e))),
        })
        .await?;
    match proposed {
        Ok(id) => Ok(answer(&viewer, Redirect::to(&format!("/plans/{id}")))),
        Err(why) => c.refused(why, "/plans".into()),
    }
}

/// `GET /amc?q=…`: AMCs by name or number; one found, everything about it.
pub(super) async fn amc(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Failure> {
    let viewer = c.viewer(&headers, peer).await?;
    let q = Fields::parse(query.unwrap_or_default().as_bytes()).get("q").chars().take(100).collect::<String>();
    let (head, lang) = (c.head(&viewer, c.t().amc_search.to_owned(), "amc"), c.inner.lang.clone());
    let page = c.blocking(move |engine| Ok(views::amc(engine, head, &q, &lang)?)).await?;
    Ok(answer(&viewer, Html(render(&page)?)))
}

pub(super) async fn notifications(State(c): State<Console>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Result<Response, Failure> {
    let viewer = c.viewer(&headers, peer).await?;
    let (head, lang) = (c.head(&viewer, c.t().notifications.to_owned(), "notifications"), c.inner.lang.clone());
    let page = c.blocking(move |engine| Ok(views::notifications(engine, head, &lang)?)).await?;
    Ok(answer(&viewer, Html(render(&page)?)))
}

pub(super) async fn alerts(State(c): State<Console>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Result<Response, Failure> {
    let viewer = c.viewer(&headers, peer).await?;
    let (head, lang) = (c.head(&viewer, c.t().alerts.to_owned(), "alerts"), c.inner.lang.clone());
    let page = c.blocking(move |engine| Ok(views::alerts(engine, head, &lang)?)).await?;
    Ok(answer(&viewer, Html(render(&page)?)))
}

pub(super) async fn audit(State(c): State<Console>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Result<Response, Failure> {
    let viewer = c.viewer(&headers, peer).await?;
    let head = c.head(&viewer, c.t().audit.to_owned(), "audit");
    let page = c.blocking(move |engine| Ok(views::audit(engine, head)?)).await?;
    Ok(answer(&viewer, Html(render(&page)?)))
}

/// Which openings are used (issue 15): read-only, for every role.
pub(super) async fn openings(State(c): State<Console>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Result<Response, Failure> {
    let viewer = c.viewer(&headers, peer).await?;
    let mut head = c.head(&viewer, String::new(), "openings");
    head.title = super::openings::labels(head.lang).title.to_owned();
    let page = c.blocking(move |engine| Ok(super::openings::page(engine, head)?)).await?;
    Ok(answer(&viewer, Html(render(&page)?)))
}

/// The console's only style sheet (the Content-Security-Policy allows no inline style).
const STYLESHEET: &str = include_str!("../../templates/console/console.css");

pub(super) async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")], STYLESHEET).into_response()
}

pub(super) async fn not_found() -> Failure {
    Failure::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_read_as_posted_whatever_their_type() {
        let form = Fields::parse(b"csrf=ab12&comment=vu+avec+l%27AMC%20%26+co&csrf=cd34");
        assert_eq!(form.get("comment"), "vu avec l'AMC & co");
        assert_eq!(form.get("csrf"), "cd34", "the last one wins, as with any duplicate");
        assert_eq!(form.get("missing"), "");
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_secure_over_tls() {
        let plain = session_cookie("rocsync_session", "ab", false).unwrap();
        let text = plain.to_str().unwrap();
        assert!(text.starts_with("rocsync_session=ab;") && text.contains("HttpOnly") && text.contains("SameSite=Strict"), "{text}");
        assert!(!text.contains("Secure"), "{text}");
        let tls = session_cookie("__Host-rocsync_session", "ab", true).unwrap();
        assert!(tls.to_str().unwrap().contains("; Secure") && tls.to_str().unwrap().contains("Path=/"));
        assert!(removal_cookie("rocsync_session", false).unwrap().to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn only_the_address_the_proxy_added_counts() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, 198.18.1.2"));
        assert_eq!(forwarded_for(&headers).as_deref(), Some("198.18.1.2"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("not an address"));
        assert_eq!(forwarded_for(&headers), None);
        let mut site = HeaderMap::new();
        site.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_site(&site));
        assert!(!cross_site(&HeaderMap::new()));
    }
}
