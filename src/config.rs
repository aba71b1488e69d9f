//! Configuration from environment variables (and an optional `.env`, loaded by `main`).
//! Every variable is documented with its default in `.env.example`. An invalid value
//! stops the start with an error that names the variable.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::secrets::Secret;

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the database lives.
#[derive(Debug, Clone)]
pub enum DatabaseConfig {
    /// A private cluster run from the installed PostgreSQL binaries, under `data_dir`.
    Embedded,
    /// An existing server (the production path).
    Url(Secret<String>),
}

/// Outbound mail. Consumed by the delivery module; with `None` mail is captured locally.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub url: Secret<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    /// The address people and subscribers reach Loopline at; used for links and to
    /// decide whether cookies are `Secure`.
    pub public_url: String,
    pub database: DatabaseConfig,
    pub data_dir: PathBuf,
    pub db_max_connections: u32,
    /// When unset, a key is generated on first start and kept in the database.
    pub secret_key: Option<Secret<String>>,
    pub smtp: Option<SmtpConfig>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub session_ttl: Duration,
    pub trust_proxy_headers: bool,
    pub job_concurrency: usize,
    pub shutdown_grace: Duration,
    pub mail: MailConfig,
    /// Bounce and complaint webhooks; a provider without credentials is disabled.
    pub webhooks: crate::delivery::feedback::WebhookKeys,
}

/// Sending: who mail is from, how fast it may go, how tracking stores IPs.
#[derive(Debug, Clone)]
pub struct MailConfig {
    pub from_email: String,
    /// Where the `mailto:` of `List-Unsubscribe` points (`UNSUBSCRIBE_MAILTO`; unset:
    /// `from_email`): an address whose mail reaches Loopline through an inbound webhook.
    pub unsubscribe_mailto: Option<String>,
    pub from_name: String,
    /// Messages in flight at once per process (and SMTP connections).
    pub concurrency: usize,
    /// Shared by every process on the database; 0 = no limit.
    pub per_second: i32,
    pub per_hour: i32,
    /// How long a sender's claim on a message lasts; mail held by a process that died
    /// goes out again after this.
    pub lease: Duration,
    pub track_ip: crate::tracking::classify::IpPrivacy,
    /// Extra CA certificates (PEM) trusted for the SMTP server's TLS (`SMTP_CA_FILE`).
    pub smtp_ca: Option<Vec<u8>>,
    /// How long opening an SMTP session, and then each message's exchange, may take
    /// (`SMTP_TIMEOUT_SECS`).
    pub smtp_timeout: Duration,
    /// DKIM signing identity, when DKIM_SELECTOR and DKIM_PRIVATE_KEY_FILE are set.
    pub dkim: Option<std::sync::Arc<crate::delivery::dkim::DkimSigner>>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads from any lookup function, so tests can check parsing without touching the
    /// process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |k: &'static str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };

        let listen_addr: SocketAddr = parse(
            &var,
            "LISTEN_ADDR",
            "127.0.0.1:8080",
            "an address like 127.0.0.1:8080",
        )?;
        let public_url = match var("PUBLIC_URL") {
            Some(u) => {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(err("PUBLIC_URL", "must start with http:// or https://"));
                }
                u.trim_end_matches('/').to_string()
            }
            None => format!("http://{listen_addr}"),
        };
        let database = match var("DATABASE_URL") {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                DatabaseConfig::Url(Secret::new(u))
            }
            Some(_) => {
                return Err(err(
                    "DATABASE_URL",
                    "must be a postgres:// or postgresql:// URL",
                ));
            }
            None => DatabaseConfig::Embedded,
        };
        let data_dir = PathBuf::from(var("LOOPLINE_DATA_DIR").unwrap_or_else(|| "./data".into()));
        let db_max_connections: u32 =
            parse(&var, "DATABASE_MAX_CONNECTIONS", "20", "a positive number")?;
        if db_max_connections < 2 {
            return Err(err("DATABASE_MAX_CONNECTIONS", "must be at least 2"));
        }
        let secret_key = match var("SECRET_KEY") {
            Some(k) if k.len() < 32 => {
                return Err(err("SECRET_KEY", "must be at least 32 characters"));
            }
            Some(k) => Some(Secret::new(k)),
            None => None,
        };
        let smtp = match var("SMTP_URL") {
            Some(u) if u.starts_with("smtp://") || u.starts_with("smtps://") => Some(SmtpConfig {
                url: Secret::new(u),
            }),
            Some(_) => {
                return Err(err(
                    "SMTP_URL",
                    "must look like smtp://user:pass@host:587 or smtps://user:pass@host:465",
                ));
            }
            None => None,
        };
        let log_format = match var("LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(err("LOG_FORMAT", "must be `text` or `json`")),
        };
        let log_level = var("LOG_LEVEL").unwrap_or_else(|| "info".into());
        let session_hours: u64 = parse(&var, "SESSION_TTL_HOURS", "336", "a number of hours")?;
        if session_hours == 0 {
            return Err(err("SESSION_TTL_HOURS", "must be at least 1"));
        }
        let trust_proxy_headers = parse_bool(&var, "TRUST_PROXY_HEADERS", false)?;
        let job_concurrency: usize = parse(&var, "JOB_CONCURRENCY", "4", "a positive number")?;
        if job_concurrency == 0 {
            return Err(err("JOB_CONCURRENCY", "must be at least 1"));
        }
        let grace: u64 = parse(&var, "SHUTDOWN_GRACE_SECS", "20", "a number of seconds")?;
        let from_email = var("MAIL_FROM").unwrap_or_else(|| "loopline@localhost".into());
        if crate::address::EmailAddress::parse(&from_email).is_err()
            && from_email != "loopline@localhost"
        {
            return Err(err(
                "MAIL_FROM",
                "must be an email address like news@example.com",
            ));
        }
        let unsubscribe_mailto = match var("UNSUBSCRIBE_MAILTO") {
            None => None,
            Some(a) => Some(
                crate::address::EmailAddress::parse(&a)
                    .map_err(|_| {
                        err(
                            "UNSUBSCRIBE_MAILTO",
                            "must be an email address like unsubscribe@example.com",
                        )
                    })?
                    .as_str()
                    .to_string(),
            ),
        };
        let concurrency: usize = parse(&var, "SEND_CONCURRENCY", "8", "a positive number")?;
        if concurrency == 0 {
            return Err(err("SEND_CONCURRENCY", "must be at least 1"));
        }
        let dkim = match (var("DKIM_SELECTOR"), var("DKIM_PRIVATE_KEY_FILE")) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(err(
                    "DKIM_PRIVATE_KEY_FILE",
                    "must name the PEM private key file when DKIM_SELECTOR is set",
                ));
            }
            (None, Some(_)) => {
                return Err(err(
                    "DKIM_SELECTOR",
                    "must be set (the DNS selector, e.g. `loopline`) when DKIM_PRIVATE_KEY_FILE is set",
                ));
            }
            (Some(selector), Some(file)) => {
                let domain = var("DKIM_DOMAIN").unwrap_or_else(|| {
                    from_email
                        .rsplit_once('@')
                        .map_or("localhost", |(_, d)| d)
                        .to_string()
                });
                let pem = std::fs::read_to_string(&file).map_err(|e| {
                    err("DKIM_PRIVATE_KEY_FILE", format!("cannot read {file}: {e}"))
                })?;
                let signer = crate::delivery::dkim::DkimSigner::from_pem(&domain, &selector, &pem)
                    .map_err(|e| err("DKIM_PRIVATE_KEY_FILE", e))?;
                Some(std::sync::Arc::new(signer))
            }
        };
        let lease_secs: u64 = parse(&var, "SEND_LEASE_SECS", "120", "a number of seconds")?;
        if lease_secs < 5 {
            return Err(err("SEND_LEASE_SECS", "must be at least 5"));
        }
        let smtp_timeout: u64 = parse(&var, "SMTP_TIMEOUT_SECS", "30", "a number of seconds")?;
        if smtp_timeout == 0 {
            return Err(err("SMTP_TIMEOUT_SECS", "must be at least 1"));
        }
        let smtp_ca = match var("SMTP_CA_FILE") {
            None => None,
            Some(file) => {
                let pem = std::fs::read(&file)
                    .map_err(|e| err("SMTP_CA_FILE", format!("cannot read {file}: {e}")))?;
                if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                    return Err(err(
                        "SMTP_CA_FILE",
                        format!("{file} holds no PEM certificate"),
                    ));
                }
                Some(pem)
            }
        };
        let mail = MailConfig {
            smtp_ca,
            smtp_timeout: Duration::from_secs(smtp_timeout),
            dkim,
            from_email,
            unsubscribe_mailto,
            from_name: var("MAIL_FROM_NAME").unwrap_or_else(|| "Loopline".into()),
            concurrency,
            per_second: parse(&var, "SEND_RATE_PER_SECOND", "0", "a number (0 = no limit)")?,
            per_hour: parse(&var, "SEND_RATE_PER_HOUR", "0", "a number (0 = no limit)")?,
            lease: Duration::from_secs(lease_secs),
            track_ip: parse(&var, "TRACK_IP", "truncated", "full, truncated or hashed")?,
        };

        let webhooks = webhook_keys(&var)?;

        Ok(Self {
            listen_addr,
            public_url,
            database,
            data_dir,
            db_max_connections,
            secret_key,
            smtp,
            log_format,
            log_level,
            session_ttl: Duration::from_secs(session_hours * 3600),
            trust_proxy_headers,
            job_concurrency,
            shutdown_grace: Duration::from_secs(grace),
            mail,
            webhooks,
        })
    }

    /// Cookies get the `Secure` flag when Loopline is served over https.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

fn webhook_keys(
    var: &impl Fn(&'static str) -> Option<String>,
) -> Result<crate::delivery::feedback::WebhookKeys, ConfigError> {
    use crate::delivery::feedback::{BasicAuth, SendGridKey, SesConfig, WebhookKeys, sns};
    let sendgrid = match var("SENDGRID_WEBHOOK_PUBLIC_KEY") {
        Some(k) => Some(
            SendGridKey::parse(&k).map_err(|reason| err("SENDGRID_WEBHOOK_PUBLIC_KEY", reason))?,
        ),
        None => None,
    };
    let postmark = match (
        var("POSTMARK_WEBHOOK_USER"),
        var("POSTMARK_WEBHOOK_PASSWORD"),
    ) {
        (None, None) => None,
        (Some(user), Some(password)) => {
            if user.contains(':') {
                return Err(err("POSTMARK_WEBHOOK_USER", "must not contain `:`"));
            }
            if password.len() < 12 {
                return Err(err(
                    "POSTMARK_WEBHOOK_PASSWORD",
                    "must be at least 12 characters",
                ));
            }
            Some(BasicAuth {
                user,
                password: Secret::new(password),
            })
        }
        (Some(_), None) => {
            return Err(err(
                "POSTMARK_WEBHOOK_USER",
                "is set but POSTMARK_WEBHOOK_PASSWORD is not; set both",
            ));
        }
        (None, Some(_)) => {
            return Err(err(
                "POSTMARK_WEBHOOK_PASSWORD",
                "is set but POSTMARK_WEBHOOK_USER is not; set both",
            ));
        }
    };
    let generic = match var("WEBHOOK_SECRET") {
        Some(s) if s.len() < 16 => {
            return Err(err("WEBHOOK_SECRET", "must be at least 16 characters"));
        }
        other => other.map(Secret::new),
    };
    let ses = match var("SES_SNS_TOPIC_ARNS") {
        None => None,
        Some(list) => {
            let topic_arns: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect();
            if let Some(bad) = topic_arns.iter().find(|a| !sns::is_topic_arn(a)) {
                return Err(err(
                    "SES_SNS_TOPIC_ARNS",
                    format!(
                        "{bad:?} is not an SNS topic ARN (arn:aws:sns:<region>:<account id>:<topic>)"
                    ),
                ));
            }
            if topic_arns.is_empty() {
                return Err(err("SES_SNS_TOPIC_ARNS", "lists no topic ARN"));
            }
            Some(SesConfig {
                topic_arns,
                trust: sns::SnsTrust::aws(),
            })
        }
    };
    Ok(WebhookKeys {
        mailgun: var("MAILGUN_WEBHOOK_KEY").map(Secret::new),
        sendgrid,
        postmark,
        generic,
        ses,
    })
}

fn err(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        reason: reason.into(),
    }
}

fn parse<T: std::str::FromStr>(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: &str,
    expected: &str,
) -> Result<T, ConfigError> {
    let raw = var(name).unwrap_or_else(|| default.to_string());
    raw.parse()
        .map_err(|_| err(name, format!("`{raw}` is not {expected}")))
}

fn parse_bool(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match var(name).map(|v| v.to_ascii_lowercase()).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => Err(err(name, format!("`{other}` is not true or false"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_are_embedded_and_local() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.public_url, "http://127.0.0.1:8080");
        assert!(matches!(c.database, DatabaseConfig::Embedded));
        assert!(!c.secure_cookies());
        // Unsubscribing by mail goes to the sender unless told otherwise.
        assert_eq!(c.mail.unsubscribe_mailto, None);
        let c = cfg(&[("UNSUBSCRIBE_MAILTO", "out@example.kr")]).unwrap();
        assert_eq!(c.mail.unsubscribe_mailto.as_deref(), Some("out@example.kr"));
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (k, v) in [
            ("LISTEN_ADDR", "nonsense"),
            ("DATABASE_URL", "mysql://x"),
            ("SECRET_KEY", "short"),
            ("LOG_FORMAT", "xml"),
            ("JOB_CONCURRENCY", "0"),
            ("TRUST_PROXY_HEADERS", "maybe"),
            ("PUBLIC_URL", "example.com"),
            ("SMTP_URL", "http://x"),
            ("SENDGRID_WEBHOOK_PUBLIC_KEY", "not-a-key"),
            ("POSTMARK_WEBHOOK_USER", "user-without-password"),
            ("POSTMARK_WEBHOOK_PASSWORD", "password-without-user"),
            ("WEBHOOK_SECRET", "short"),
            ("SEND_LEASE_SECS", "1"),
            ("SMTP_TIMEOUT_SECS", "0"),
            ("SMTP_TIMEOUT_SECS", "soon"),
            ("UNSUBSCRIBE_MAILTO", "not an address"),
        ] {
            let e = cfg(&[(k, v)]).unwrap_err();
            assert_eq!(e.var, k);
            assert!(e.to_string().contains(k));
        }
    }

    #[test]
    fn dkim_settings_are_all_or_nothing_and_the_key_must_load() {
        let e = cfg(&[("DKIM_SELECTOR", "s1")]).unwrap_err();
        assert_eq!(e.var, "DKIM_PRIVATE_KEY_FILE");
        let e = cfg(&[("DKIM_PRIVATE_KEY_FILE", "/x.pem")]).unwrap_err();
        assert_eq!(e.var, "DKIM_SELECTOR");
        let e = cfg(&[
            ("DKIM_SELECTOR", "s1"),
            ("DKIM_PRIVATE_KEY_FILE", "/nonexistent/dkim.pem"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "DKIM_PRIVATE_KEY_FILE");
        assert!(e.reason.contains("cannot read"), "{}", e.reason);
        let not_a_key = std::env::temp_dir().join(format!("not-a-key-{}.pem", std::process::id()));
        std::fs::write(&not_a_key, "hello").unwrap();
        let e = cfg(&[
            ("DKIM_SELECTOR", "s1"),
            ("DKIM_PRIVATE_KEY_FILE", not_a_key.to_str().unwrap()),
        ])
        .unwrap_err();
        std::fs::remove_file(&not_a_key).unwrap();
        assert_eq!(e.var, "DKIM_PRIVATE_KEY_FILE");
        assert!(e.reason.contains("PEM"), "{}", e.reason);
        assert!(cfg(&[]).unwrap().mail.dkim.is_none());
    }

    #[test]
    fn ses_feedback_needs_sns_topic_arns() {
        assert!(cfg(&[]).unwrap().webhooks.ses.is_none());
        let c = cfg(&[(
            "SES_SNS_TOPIC_ARNS",
            " arn:aws:sns:us-east-1:123456789012:ses-bounces, arn:aws:sns:eu-west-1:123456789012:ses-complaints ,",
        )])
        .unwrap();
        let ses = c.webhooks.ses.as_ref().unwrap();
        assert_eq!(
            ses.topic_arns,
            [
                "arn:aws:sns:us-east-1:123456789012:ses-bounces",
                "arn:aws:sns:eu-west-1:123456789012:ses-complaints"
            ]
        );
        assert_eq!(
            c.webhooks.echoing(),
            [crate::delivery::feedback::Provider::Ses]
        );
        for bad in ["arn:aws:sqs:us-east-1:123456789012:q", "ses-bounces", " , "] {
            let e = cfg(&[("SES_SNS_TOPIC_ARNS", bad)]).unwrap_err();
            assert_eq!(e.var, "SES_SNS_TOPIC_ARNS", "{bad}");
        }
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let c = cfg(&[
            ("DATABASE_URL", "postgres://u:pw-very-secret@db/x"),
            ("SECRET_KEY", "k-very-secret-0123456789abcdefghijklmnop"),
            ("SMTP_URL", "smtp://u:smtp-very-secret@mail:587"),
            ("MAILGUN_WEBHOOK_KEY", "mg-very-secret"),
            ("POSTMARK_WEBHOOK_USER", "postmark"),
            ("POSTMARK_WEBHOOK_PASSWORD", "pm-very-secret-password"),
            ("WEBHOOK_SECRET", "generic-very-secret-0123"),
        ])
        .unwrap();
        assert!(c.webhooks.mailgun.is_some() && c.webhooks.postmark.is_some());
        assert!(c.webhooks.generic.is_some() && c.webhooks.sendgrid.is_none());
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        assert!(!c.secure_cookies());
    }
}
