//! Separate network hosts for the nodes: one network namespace per node (`ip netns`), joined by a
//! bridge on a private /24 whose first address is the harness's own, so clients reach every node
//! while the nodes reach each other only through the bridge. Network faults act here: a partition
//! is a pair of blackhole routes per peer, loss and latency are a `tc netem` qdisc on the node's
//! link. Everything made is removed on drop.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// One node's host: its namespace, address and link inside the namespace.
#[derive(Clone, Debug)]
pub struct Host {
    pub namespace: String,
    pub ip: Ipv4Addr,
    link: String,
}

/// The bridge and namespaces of a run.
pub struct Network {
    bridge: String,
    pub hosts: Vec<Host>,
}

/// What `tc netem` does to a node's outgoing packets while a netem fault holds.
pub const NETEM: &[&str] = &["delay", "40ms", "20ms", "loss", "10%"];

fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip").args(args).output().context("cannot run ip (iproute2)")?;
    if !output.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

fn in_namespace(namespace: &str, program: &str, args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(["netns", "exec", namespace, program])
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program} in {namespace}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} in {namespace}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

impl Network {
    /// Why namespaces can't be made here, if they can't (checked without making anything).
    pub fn unavailable() -> Option<String> {
        if !rustix::process::geteuid().is_root() {
            return Some("network namespaces need root".into());
        }
        match Command::new("ip").arg("-V").output() {
            Ok(output) if output.status.success() => None,
            _ => Some("network namespaces need iproute2's ip".into()),
        }
    }

    /// A bridge and `count` hosts on it; named after this process so runs don't meet.
    pub fn create(count: usize) -> Result<Network> {
        let pid = std::process::id();
        let tag = pid % 10_000;
        let subnet = [10, 215, (pid % 250) as u8];
        let mut network = Network { bridge: format!("scbr{tag}"), hosts: Vec::new() };
        let gateway = format!("{}.{}.{}.1/24", subnet[0], subnet[1], subnet[2]);
        ip(&["link", "add", &network.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &gateway, "dev", &network.bridge])?;
        ip(&["link", "set", &network.bridge, "up"])?;
        for index in 0..count {
            let namespace = format!("sc{tag}n{}", index + 1);
            let (outside, link) = (format!("sch{tag}x{}", index + 1), format!("scn{tag}x{}", index + 1));
            let address = Ipv4Addr::new(subnet[0], subnet[1], subnet[2], 10 + index as u8);
            ip(&["netns", "add", &namespace])?;
            network.hosts.push(Host { namespace: namespace.clone(), ip: address, link: link.clone() });
            ip(&["link", "add", &outside, "type", "veth", "peer", "name", &link])?;
            ip(&["link", "set", &link, "netns", &namespace])?;
            ip(&["link", "set", &outside, "master", &network.bridge])?;
            ip(&["link", "set", &outside, "up"])?;
            in_namespace(&namespace, "ip", &["addr", "add", &format!("{address}/24"), "dev", &link])?;
            in_namespace(&namespace, "ip", &["link", "set", &link, "up"])?;
            in_namespace(&namespace, "ip", &["link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    /// Cuts node `index` off from every other node (both ways); clients still reach all of them.
    pub fn partition(&self, index: usize) -> Result<()> {
        self.routes(index, "add")
    }

    /// Ends a partition made by `partition`.
    pub fn heal_partition(&self, index: usize) -> Result<()> {
        self.routes(index, "del")
    }

    fn routes(&self, index: usize, verb: &str) -> Result<()> {
        let cut = &self.hosts[index];
        for peer in self.hosts.iter().filter(|h| h.namespace != cut.namespace) {
            in_namespace(&cut.namespace, "ip", &["route", verb, "blackhole", &format!("{}/32", peer.ip)])?;
            in_namespace(&peer.namespace, "ip", &["route", verb, "blackhole", &format!("{}/32", cut.ip)])?;
        }
        Ok(())
    }

    /// Delays and drops node `index`'s outgoing packets (`NETEM`).
    pub fn degrade(&self, index: usize) -> Result<()> {
        let host = &self.hosts[index];
        let mut args = vec!["qdisc", "add", "dev", host.link.as_str(), "root", "netem"];
        args.extend_from_slice(NETEM);
        in_namespace(&host.namespace, "tc", &args)
    }

    /// Ends `degrade`.
    pub fn restore(&self, index: usize) -> Result<()> {
        let host = &self.hosts[index];
        in_namespace(&host.namespace, "tc", &["qdisc", "del", "dev", &host.link, "root"])
    }

    /// Checks, before a run counts on it, that this kernel can degrade a link (many kernels
    /// are built without `sch_netem`): a run whose netem faults all failed proves nothing.
    pub fn probe_netem(&self) -> Result<()> {
        self.degrade(0).context("this kernel cannot inject netem faults (no sch_netem?)")?;
        self.restore(0)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = ip(&["netns", "del", &host.namespace]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
