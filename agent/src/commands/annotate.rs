//! `steward annotate deploy|finish`: deployment annotations in Grafana.
//! `deploy` posts a point annotation tagged `deploy`, `env:E`, `version:V`
//! and `deploy_id:X` and prints its id; `finish` sets its `timeEnd` so the
//! deployment shows as a region. A retried `deploy` with the same
//! `--deploy-id` finds the existing annotation instead of adding a second.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Loaded;
use crate::exit_code::EXIT_CONFIG;
use crate::grafana::{
    check_dashboard_uid, dedup_keep_order, now_ms, resolve_token, AnnotationPatch, GrafanaClient,
    GrafanaError, NewAnnotation, URL_ENV,
};

#[derive(Debug, clap::Args)]
pub struct AnnotateArgs {
    /// Grafana base URL (default: $GRAFANA_URL, then grafana.url).
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// File holding the service-account token (default: grafana.token or
    /// grafana.token_file, then $GRAFANA_TOKEN).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Attach to this dashboard (default: grafana.dashboard_uid; unset: an
    /// organization annotation shown on every dashboard by tag).
    #[arg(long, global = true)]
    pub dashboard_uid: Option<String>,
    /// Request timeout in seconds (default: grafana.timeout_secs).
    #[arg(long, global = true)]
    pub timeout_secs: Option<f64>,

    #[command(subcommand)]
    pub command: AnnotateCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AnnotateCommand {
    /// Mark the start of a deployment; prints the annotation id on stdout.
    // `--version` is the deployed version here, not Steward's own.
    #[command(disable_version_flag = true)]
    Deploy {
        /// The version being deployed (tag `version:V`).
        #[arg(long)]
        version: String,
        /// The environment (tag `env:E`).
        #[arg(long)]
        env: String,
        /// Extra tags, comma-separated or repeated.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// Annotation text (default: "Deploy V to E on HOST").
        #[arg(long)]
        text: Option<String>,
        /// A unique id of this deployment (e.g. the CI run id), tagged
        /// `deploy_id:X`: a retry with the same id prints the existing
        /// annotation's id instead of adding a duplicate. Default: a new id.
        #[arg(long)]
        deploy_id: Option<String>,
    },
    /// Mark the end of a deployment (sets timeEnd to now).
    Finish {
        /// The id printed by `steward annotate deploy`.
        #[arg(required_unless_present = "deploy_id", conflicts_with = "deploy_id")]
        id: Option<u64>,
        /// Find the deployment by its `deploy_id:X` tag instead.
        #[arg(long)]
        deploy_id: Option<String>,
    },
}

/// Exit code when Grafana refuses or cannot be reached.
const EXIT_GRAFANA: u8 = 1;

pub async fn run(args: AnnotateArgs, loaded: &Loaded) -> anyhow::Result<ExitCode> {
    let client = match client(&args, loaded) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let dashboard_uid = args
        .dashboard_uid
        .clone()
        .or_else(|| loaded.config.grafana.dashboard_uid.clone());
    if let Some(uid) = &dashboard_uid {
        if let Err(e) = check_dashboard_uid(uid) {
            eprintln!("error: --dashboard-uid: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    }
    let result = match args.command {
        AnnotateCommand::Deploy {
            version,
            env,
            tags,
            text,
            deploy_id,
        } => {
            if let Err(message) = check_usage(&version, &env, text.as_deref(), deploy_id.as_deref())
            {
                eprintln!("error: {message}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            let deploy = Deploy {
                version,
                env,
                tags,
                text,
                deploy_id,
                dashboard_uid,
            };
            deploy_annotation(&client, loaded, deploy).await
        }
        AnnotateCommand::Finish { id, deploy_id } => finish(&client, id, deploy_id).await,
    };
    match result {
        Ok(id) => {
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(EXIT_GRAFANA))
        }
    }
}

/// Builds the client from flags, environment and `[grafana]`; the error
/// says which setting is missing or wrong.
fn client(args: &AnnotateArgs, loaded: &Loaded) -> Result<GrafanaClient, String> {
    let grafana = &loaded.config.grafana;
    let url = args
        .url
        .clone()
        .or_else(|| std::env::var(URL_ENV).ok().filter(|u| !u.trim().is_empty()))
        .or_else(|| grafana.url.clone())
        .ok_or_else(|| {
            format!("no Grafana URL: pass --url, set ${URL_ENV}, or set grafana.url in the configuration")
        })?;
    let explicit = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("--token-file: cannot read {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let token = resolve_token(explicit, grafana).ok_or_else(|| {
        format!(
            "no Grafana token: pass --token-file, set ${}, or set grafana.token / grafana.token_file",
            crate::grafana::TOKEN_ENV
        )
    })?;
    let timeout_secs = args.timeout_secs.unwrap_or(grafana.timeout_secs);
    if !(timeout_secs > 0.0 && timeout_secs <= 300.0) {
        return Err(format!(
            "--timeout-secs: {timeout_secs} is out of range; use a value in (0, 300]"
        ));
    }
    GrafanaClient::new(&url, &token, Duration::from_secs_f64(timeout_secs))
        .map_err(|e| format!("Grafana URL: {e}"))
}

fn check_usage(
    version: &str,
    env: &str,
    text: Option<&str>,
    deploy_id: Option<&str>,
) -> Result<(), String> {
    if version.trim().is_empty() {
        return Err("--version is empty".into());
    }
    if env.trim().is_empty() {
        return Err("--env is empty".into());
    }
    if text.is_some_and(|t| t.trim().is_empty()) {
        // Grafana answers 400 to an empty text; say it before sending.
        return Err("--text is empty; omit it for the default text".into());
    }
    if deploy_id.is_some_and(|d| d.trim().is_empty()) {
        return Err("--deploy-id is empty".into());
    }
    Ok(())
}

struct Deploy {
    version: String,
    env: String,
    tags: Vec<String>,
    text: Option<String>,
    deploy_id: Option<String>,
    dashboard_uid: Option<String>,
}

fn deploy_tag(id: &str) -> String {
    format!("deploy_id:{id}")
}

async fn deploy_annotation(
    client: &GrafanaClient,
    loaded: &Loaded,
    deploy: Deploy,
) -> Result<u64, GrafanaError> {
    if let Some(uid) = &deploy.dashboard_uid {
        client.check_dashboard(uid).await?;
    }
    let host = loaded.config.agent.effective_hostname();
    let deploy_id = match &deploy.deploy_id {
        Some(id) => {
            // Idempotency: Grafana has none, so look the id up first.
            let existing = client
                .find_by_tags(&["deploy".to_string(), deploy_tag(id)], 10)
                .await?;
            if let Some(found) = existing.first() {
                eprintln!(
                    "deployment {id} is already annotated (id {}); not adding another",
                    found.id
                );
                return Ok(found.id);
            }
            id.clone()
        }
        None => {
            let generated = format!("{}-{}-{}", deploy.env, deploy.version, now_ms());
            eprintln!("deploy id: {generated} (pass --deploy-id to make retries safe)");
            generated
        }
    };
    let mut tags = vec![
        "deploy".to_string(),
        format!("env:{}", deploy.env),
        format!("version:{}", deploy.version),
        deploy_tag(&deploy_id),
        format!("host:{host}"),
    ];
    tags.extend(loaded.config.grafana.tags.iter().cloned());
    tags.extend(
        deploy
            .tags
            .iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty()),
    );
    dedup_keep_order(&mut tags);
    let text = deploy
        .text
        .clone()
        .unwrap_or_else(|| format!("Deploy {} to {} on {host}", deploy.version, deploy.env));
    let annotation = NewAnnotation {
        dashboard_uid: deploy.dashboard_uid.clone(),
        time: Some(now_ms()),
        time_end: None,
        tags,
        text,
    };
    client.create(&annotation).await.map_err(|e| match e {
        // A POST that timed out may have been stored: a blind retry would
        // duplicate it, a retry with the same deploy id will not.
        GrafanaError::Timeout { url, after } => GrafanaError::PostTimeout {
            url,
            after,
            deploy_id: deploy_id.clone(),
        },
        other => other,
    })
}

async fn finish(
    client: &GrafanaClient,
    id: Option<u64>,
    deploy_id: Option<String>,
) -> Result<u64, GrafanaError> {
    let end = now_ms();
    let id = match id {
        Some(id) => id,
        None => {
            // clap makes sure one of ID and --deploy-id is given.
            let deploy_id = deploy_id.unwrap_or_default();
            let found = client
                .find_by_tags(&["deploy".to_string(), deploy_tag(&deploy_id)], 10)
                .await?;
            let Some(newest) = found.first() else {
                return Err(GrafanaError::DeploymentNotFound {
                    url: client.base_url().trim_end_matches('/').to_string(),
                    deploy_id,
                });
            };
            newest.id
        }
    };
    client
        .patch(
            id,
            &AnnotationPatch {
                time_end: Some(end),
                ..Default::default()
            },
        )
        .await?;
    Ok(id)
}
