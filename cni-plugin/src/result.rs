//! prevResult: finding the pod's interface, addresses and gateway, and printing it unchanged in
//! the requested cniVersion.

use crate::error::{Error, Result};
use serde_json::Value;
use std::net::IpAddr;

/// The pod's side of the attachment, as the main plugin reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAttachment {
    /// Index of the pod interface in `interfaces`.
    pub interface: usize,
    pub sandbox: String,
    pub ips: Vec<IpAddr>,
    pub gateway: Option<IpAddr>,
}

fn addr_of(cidr: &str) -> Option<IpAddr> {
    cidr.split('/').next()?.parse().ok()
}

/// Finds the interface named `ifname` with a non-empty sandbox, and the IPs that point to it.
pub fn pod_attachment(prev: &Value, ifname: &str) -> Result<PodAttachment> {
    let interfaces = prev
        .get("interfaces")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            Error::config(
                "prevResult has no interfaces; list trireme after the main plugin (bridge, ptp, flannel)",
            )
        })?;
    let (index, sandbox) = interfaces
        .iter()
        .enumerate()
        .find_map(|(i, itf)| {
            let name = itf.get("name").and_then(Value::as_str)?;
            let sandbox = itf.get("sandbox").and_then(Value::as_str)?;
            (name == ifname && !sandbox.is_empty()).then(|| (i, sandbox.to_string()))
        })
        .ok_or_else(|| {
            Error::config(format!(
                "prevResult has no interface {ifname:?} inside a sandbox; the main plugin must create the pod interface"
            ))
        })?;
    let mut ips = Vec::new();
    let mut gateway = None;
    for ip in prev
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if ip.get("interface").and_then(Value::as_u64) != Some(index as u64) {
            continue;
        }
        let addr = ip
            .get("address")
            .and_then(Value::as_str)
            .and_then(addr_of)
            .ok_or_else(|| {
                Error::config(format!("prevResult ip entry {ip} has no valid address"))
            })?;
        ips.push(addr);
        if gateway.is_none() {
            if let Some(g) = ip.get("gateway").and_then(Value::as_str) {
                gateway = Some(g.parse().map_err(|_| {
                    Error::config(format!("prevResult gateway {g:?} is not an IP address"))
                })?);
            }
        }
    }
    if ips.is_empty() {
        return Err(Error::config(format!(
            "prevResult has no IP address on interface {ifname:?}; the main plugin's IPAM must assign one"
        )));
    }
    Ok(PodAttachment {
        interface: index,
        sandbox,
        ips,
        gateway,
    })
}

/// prevResult in `version`: only the fields whose spelling differs between 0.4.0 and 1.x
/// change (`ips[].version` exists in 0.4.0 only); everything else is passed through.
pub fn convert_result(prev: &Value, version: &str) -> Value {
    let mut out = prev.clone();
    if let Some(o) = out.as_object_mut() {
        o.insert("cniVersion".into(), Value::String(version.into()));
    }
    if let Some(ips) = out.get_mut("ips").and_then(Value::as_array_mut) {
        for ip in ips {
            let Some(o) = ip.as_object_mut() else {
                continue;
            };
            if version.starts_with("0.") {
                if !o.contains_key("version") {
                    let v = o
                        .get("address")
                        .and_then(Value::as_str)
                        .and_then(addr_of)
                        .map(|a| if a.is_ipv4() { "4" } else { "6" });
                    if let Some(v) = v {
                        o.insert("version".into(), Value::String(v.into()));
                    }
                }
            } else {
                o.remove("version");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bridge_result() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:ff"},
                {"name": "veth1", "mac": "aa:bb:cc:dd:ee:00"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:01", "sandbox": "/var/run/netns/p1"}
            ],
            "ips": [{"interface": 2, "address": "10.22.0.5/24", "gateway": "10.22.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        })
    }

    #[test]
    fn finds_pod_interface_ips_and_gateway() {
        let a = pod_attachment(&bridge_result(), "eth0").unwrap();
        assert_eq!(a.interface, 2);
        assert_eq!(a.sandbox, "/var/run/netns/p1");
        assert_eq!(a.ips, vec!["10.22.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.gateway, Some("10.22.0.1".parse().unwrap()));
    }

    #[test]
    fn wrong_or_missing_interface_is_config_error() {
        assert_eq!(
            pod_attachment(&bridge_result(), "eth1").unwrap_err().code(),
            7
        );
        assert_eq!(pod_attachment(&json!({}), "eth0").unwrap_err().code(), 7);
        let mut r = bridge_result();
        r["ips"] = json!([]);
        assert_eq!(pod_attachment(&r, "eth0").unwrap_err().code(), 7);
        // An interface without sandbox (host side) never counts as the pod's.
        assert_eq!(
            pod_attachment(&bridge_result(), "cni0").unwrap_err().code(),
            7
        );
    }

    #[test]
    fn converts_between_versions_without_touching_other_fields() {
        let r = bridge_result();
        assert_eq!(convert_result(&r, "1.0.0"), r);
        let old = convert_result(&r, "0.4.0");
        assert_eq!(old["cniVersion"], "0.4.0");
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["interfaces"], r["interfaces"]);
        let back = convert_result(&old, "1.1.0");
        assert!(back["ips"][0].get("version").is_none());
        assert_eq!(back["routes"], r["routes"]);
    }
}
