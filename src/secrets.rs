//! Secrets a node needs from its first start: the admin token and the root credentials.
//!
//! Each comes from the environment when set. Otherwise it is generated once, stored with mode
//! 0600 in the data directory and printed once, on the start that created it.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serv_storage::keys::random_hex;

/// The admin API's bearer token.
pub fn admin_token(data_dir: &Path) -> Result<String, String> {
    if let Some(token) = from_env("SERV_ADMIN_TOKEN") {
        return Ok(token);
    }
    load_or_generate(
        data_dir,
        "admin-token",
        || random_hex(32),
        |path, token| {
            format!("servd: generated admin token {token} (stored in {}, mode 0600)", path.display())
        },
    )
}

/// The cluster secret: nodes that share it form one cluster (mutual TLS on the mesh).
pub fn cluster_secret(data_dir: &Path) -> Result<String, String> {
    if let Some(secret) = from_env("SERV_CLUSTER_SECRET") {
        return Ok(secret);
    }
    load_or_generate(
        data_dir,
        "cluster-secret",
        || random_hex(32),
        |path, secret| {
            format!(
                "servd: generated cluster secret {secret} (stored in {}, mode 0600); give it to every node as SERV_CLUSTER_SECRET",
                path.display()
            )
        },
    )
}

/// Root credentials of the S3 and STOMP edges: (access key, secret key).
pub fn root_credentials(data_dir: &Path) -> Result<(String, String), String> {
    if let (Some(access), Some(secret)) = (from_env("SERV_ACCESS_KEY"), from_env("SERV_SECRET_KEY")) {
        return Ok((access, secret));
    }
    let generate = || format!("{}:{}", format!("SV{}", random_hex(9)).to_uppercase(), random_hex(20));
    let stored = load_or_generate(data_dir, "root-credentials", generate, |path, pair| {
        let (access, secret) = pair.split_once(':').unwrap_or_default();
        format!(
            "servd: generated root credentials: access key {access}, secret key {secret} (stored in {}, mode 0600)",
            path.display()
        )
    })?;
    let (access, secret) = stored.split_once(':').ok_or_else(|| {
        format!("{}/root-credentials is malformed; remove it to generate a new pair", data_dir.display())
    })?;
    Ok((access.to_string(), secret.to_string()))
}

fn from_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Reads `name` from the data dir, or creates it (0600, synced) with `generate()` and prints it.
fn load_or_generate(
    data_dir: &Path,
    name: &str,
    generate: impl FnOnce() -> String,
    announce: impl FnOnce(&Path, &str) -> String,
) -> Result<String, String> {
    let path = data_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(value) if !value.trim().is_empty() => return Ok(value.trim().to_string()),
        Ok(_) => return Err(format!("{} is empty; remove it to generate a new one", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let value = generate();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(format!("{value}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("{}", announce(&path, &value));
    Ok(value)
}
