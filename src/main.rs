//! The `loopline` command: `serve` (the default), `user create`, `migrate`.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, bail};
use loopline::{
    accounts::{self, NewPassword, Role},
    address::EmailAddress,
    config::Config,
    db::Database,
    telemetry,
};

const USAGE: &str = "\
Loopline — self-hosted marketing automation.

USAGE:
    loopline [serve]                                 run the server (dashboard, API, background jobs)
    loopline user create --email EMAIL --role ROLE   create a user (or reset their password);
                                                     ROLE is owner, editor or viewer; the password
                                                     is asked for, or read from stdin when piped
    loopline migrate                                 apply database migrations and exit
    loopline help                                    this text

Configuration comes from the environment and an optional .env file; see .env.example.";

fn main() {
    let _ = dotenvy::dotenv();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(
        args.first().map(String::as_str),
        Some("help" | "--help" | "-h")
    ) {
        println!("{USAGE}");
        return;
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loopline: {e}");
            std::process::exit(2);
        }
    };
    telemetry::init(config.log_format, &config.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(dispatch(args, config));
    if let Err(e) = result {
        tracing::error!(error = %format!("{e:#}"), "loopline stopped with an error");
        eprintln!("loopline: {e:#}");
        std::process::exit(1);
    }
}

async fn dispatch(args: Vec<String>, config: Config) -> anyhow::Result<()> {
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["serve"] => loopline::startup::run(config).await,
        ["migrate"] => {
            let db = Database::open(&config).await?;
            println!("migrations applied");
            db.close().await;
            Ok(())
        }
        ["user", "create", rest @ ..] => {
            let (email, role) = parse_user_create(rest)?;
            let password = read_password()?;
            let db = Database::open(&config).await?;
            let result = create_or_reset(&db, &email, role, password).await;
            db.close().await;
            result
        }
        _ => bail!("unknown command: {}\n\n{USAGE}", args.join(" ")),
    }
}

fn parse_user_create(rest: &[&str]) -> anyhow::Result<(EmailAddress, Role)> {
    let mut email = None;
    let mut role = None;
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match *flag {
            "--email" => {
                email =
                    Some(EmailAddress::parse(value).map_err(|e| anyhow::anyhow!("--email: {e}"))?)
            }
            "--role" => {
                role =
                    Some(Role::parse(value).with_context(|| {
                        format!("--role: `{value}` is not owner, editor or viewer")
                    })?)
            }
            other => bail!("unknown option {other}"),
        }
    }
    Ok((
        email.context("--email is required")?,
        role.context("--role is required")?,
    ))
}

fn read_password() -> anyhow::Result<NewPassword> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Repeat: ")?;
        Ok(NewPassword::parse(first, Some(&again))?)
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(NewPassword::parse(
            line.trim_end_matches(['\r', '\n']).to_string(),
            None,
        )?)
    }
}

async fn create_or_reset(
    db: &Database,
    email: &EmailAddress,
    role: Role,
    password: NewPassword,
) -> anyhow::Result<()> {
    match accounts::find_user_by_email(&db.pool, email.as_str()).await? {
        Some(existing) => {
            accounts::reset_password(&db.pool, existing.id, password)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if existing.role != role {
                accounts::set_role(&db.pool, existing.id, role)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            println!(
                "updated {} ({}); their sessions were signed out",
                existing.email,
                role.as_str()
            );
        }
        None => {
            let user = accounts::create_user(&db.pool, email, password, role)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("created {} ({})", user.email, role.as_str());
        }
    }
    Ok(())
}
