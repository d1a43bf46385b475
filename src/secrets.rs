//! The cluster secret, which a node needs before it can reach any other node. It comes from the
//! environment when set; otherwise it is generated once, stored with mode 0600 in the data
//! directory and printed once, on the start that created it. (The admin token and the root
//! credentials are the cluster's, shared over the mesh: `serv_edges::credentials`.)

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serv_storage::keys::random_hex;

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
