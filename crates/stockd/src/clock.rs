//! The wall clock, read in one place: the engine never reads it, the service passes it in.

use stockd_domain::Millis;

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> Millis {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    d.as_millis() as Millis
}
