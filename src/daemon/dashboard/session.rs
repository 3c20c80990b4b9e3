//! Signing in and out of the dashboard: the token checked in constant
//! time, a session in an HttpOnly, SameSite=Strict cookie (Secure over
//! HTTPS), and the CSRF token every form carries.

#[allow(unused_imports)]
use super::*;

/// 32 random bytes from the kernel, as hex: session ids and CSRF tokens.
pub(super) fn random_token() -> String {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("the kernel's random source is readable");
    hex::encode(bytes)
}

pub(super) fn same(given: &str, expected: &str) -> bool {
    crate::daemon::auth::equal_secrets(given.as_bytes(), expected)
}

pub(super) fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

pub(super) async fn login_form(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    d.plain(&headers, "sign in", StatusCode::OK, pages::login(None))
}

#[derive(Deserialize)]
pub(super) struct Login {
    token: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
}

pub(super) async fn login(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Form(form): Form<Login>,
) -> Response {
    let secrets = &d.shared.secrets;
    let can_act = match (&secrets.api, &secrets.status) {
        (Some(api), _) if same(&form.token, api) => true,
        (_, Some(status)) if same(&form.token, status) => false,
        _ => {
            warn!("dashboard sign-in refused: wrong token");
            return d.plain(
                &headers,
                "sign in",
                StatusCode::UNAUTHORIZED,
                pages::login(Some("That token is not right.")),
            );
        }
    };
    let name = form.name.trim();
    let email = form.email.trim();
    let author = format!(
        "{} <{}>",
        if name.is_empty() {
            "pier dashboard"
        } else {
            name
        },
        if email.is_empty() {
            "dashboard@pier.invalid"
        } else {
            email
        }
    );
    if author.contains(['\n', '\r']) || name.contains(['<', '>']) || email.contains(['<', '>']) {
        return d.plain(
            &headers,
            "sign in",
            StatusCode::BAD_REQUEST,
            pages::login(Some("A name or e-mail may not hold <, > or line breaks.")),
        );
    }
    let id = random_token();
    {
        let mut sessions = d.sessions.lock().expect("sessions lock");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf: random_token(),
                can_act,
                author: author.clone(),
                expires: now + SESSION_LIFETIME,
            },
        );
    }
    info!(%author, can_act, "dashboard sign-in");
    let cookie = format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict;{} Max-Age={}",
        d.secure_attribute(&headers),
        SESSION_LIFETIME.as_secs()
    );
    let mut response = Redirect::to("/ui/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a cookie of hex"),
    );
    response
}

#[derive(Deserialize)]
pub(super) struct Csrf {
    #[serde(default)]
    pub(super) csrf: String,
}

pub(super) async fn logout(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Form(form): Form<Csrf>,
) -> Response {
    if let Some(id) = cookie(&headers) {
        let mut sessions = d.sessions.lock().expect("sessions lock");
        if sessions.get(id).is_some_and(|s| same(&form.csrf, &s.csrf)) {
            sessions.remove(id);
        }
    }
    let mut response = Redirect::to("/ui/").into_response();
    let cookie = format!(
        "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict;{} Max-Age=0",
        d.secure_attribute(&headers)
    );
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a cookie of ASCII"),
    );
    response
}
