//! The trireme plugin's protocol surface on real namespaces: VERSION, STATUS, DEL edge cases
//! and a table of malformed invocations, each with the right code and nothing left behind.

mod common;

use common::{Fixture, Main};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use trireme_conformance::{workspace_bin, Netns, RuntimeConf};

/// A prevResult as the bridge plugin prints it, for a pod interface `eth0` in `ns`.
fn prev_result(ns: &Netns) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "cni0", "mac": "02:00:00:00:00:01"},
            {"name": "veth0", "mac": "02:00:00:00:00:02"},
            {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": ns.path()}
        ],
        "ips": [{"interface": 2, "address": "10.9.0.5/24", "gateway": "10.9.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {}
    })
}

fn base_conf(fx: &Fixture, ns: &Netns) -> Value {
    let mut c = fx.trireme_conf();
    c["cniVersion"] = json!("1.0.0");
    c["name"] = json!(fx.network);
    c["prevResult"] = prev_result(ns);
    c
}

#[test]
fn version_lists_supported_versions() {
    trireme_conformance::require_root();
    let fx = Fixture::new(Main::Bridge);
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        let out = fx.rt.version("trireme", v).unwrap();
        assert_eq!(out["cniVersion"], v);
        assert_eq!(out["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
    }
    let e = fx.rt.version("trireme", "0.3.1").unwrap_err();
    assert_eq!(common::code(&e), 1);
}

#[test]
fn status_reports_50_when_add_cannot_work() {
    let mut fx = Fixture::new(Main::Bridge);
    fx.rt
        .status(&fx.trireme_list("1.1.0"))
        .expect("STATUS with keys, iptables, enforcer");

    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        ("missing keys", json!({"keyDir": fx.path("nokeys")}), None),
        (
            "missing enforcer",
            json!({"enforcerPath": fx.path("no-enforcer")}),
            None,
        ),
        (
            "no iptables-restore in PATH",
            json!({}),
            Some("/nonexistent"),
        ),
    ];
    for (what, extra, path) in cases {
        fx.trireme_extra = extra;
        fx.rt.env = path
            .map(|p| vec![("PATH".to_string(), p.to_string())])
            .unwrap_or_default();
        let e = fx.rt.status(&fx.trireme_list("1.1.0")).unwrap_err();
        assert_eq!(common::code(&e), 50, "{what}: {e}");
    }
    // Below 1.1.0 the runtime does not call STATUS (as libcni).
    fx.trireme_extra = json!({"keyDir": fx.path("nokeys")});
    fx.rt.env.clear();
    fx.rt.status(&fx.trireme_list("1.0.0")).unwrap();
}

#[test]
fn del_without_add_netns_or_prevresult_succeeds_repeatedly() {
    let fx = Fixture::new(Main::Bridge);
    let mut conf = fx.trireme_conf();
    conf["cniVersion"] = json!("1.0.0");
    conf["name"] = json!(fx.network);
    let rc = RuntimeConf {
        container_id: "never-added".into(),
        netns: None,
        ifname: "eth0".into(),
        ..Default::default()
    };
    for _ in 0..3 {
        fx.rt.exec("trireme", "DEL", Some(&rc), &conf).unwrap();
    }
    assert!(fx.leftovers(&[]).is_empty());
}

/// One malformed invocation: how to break it, and the code the plugin must answer.
struct Case {
    name: &'static str,
    code: u64,
    /// Mutates the config (None: stdin replaced by `raw`).
    conf: fn(&mut Value, &Fixture),
    raw: Option<&'static [u8]>,
    /// Environment changes: (key, Some(value)) sets, (key, None) removes.
    env: &'static [(&'static str, Option<&'static str>)],
}

fn nop(_: &mut Value, _: &Fixture) {}

fn cases() -> Vec<Case> {
    let c = |name, code, conf: fn(&mut Value, &Fixture)| Case {
        name,
        code,
        conf,
        raw: None,
        env: &[],
    };
    let e = |name, code, env| Case {
        name,
        code,
        conf: nop,
        raw: None,
        env,
    };
    vec![
        Case {
            name: "stdin not JSON",
            code: 6,
            conf: nop,
            raw: Some(b"{\"cniVersion\":"),
            env: &[],
        },
        Case {
            name: "stdin a JSON list",
            code: 6,
            conf: nop,
            raw: Some(b"[1,2]"),
            env: &[],
        },
        c("failOpen not a bool", 6, |v, _| {
            v["failOpen"] = json!("yes")
        }),
        c("no cniVersion", 7, |v, _| {
            v.as_object_mut().unwrap().remove("cniVersion");
        }),
        c("cniVersion 0.3.1", 1, |v, _| {
            v["cniVersion"] = json!("0.3.1")
        }),
        c("no name", 7, |v, _| {
            v.as_object_mut().unwrap().remove("name");
        }),
        c("policyDir missing", 7, |v, f| {
            v["policyDir"] = json!(f.path("nopolicies"))
        }),
        c("keyDir missing", 7, |v, f| {
            v["keyDir"] = json!(f.path("nokeys"))
        }),
        c("keyDir empty", 7, |v, f| {
            let d = f.path("emptykeys");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
            v["keyDir"] = json!(d);
        }),
        c("keyDir writable by others", 7, |v, f| {
            let d = f.path("loosekeys");
            trireme_token::keys::init_psk(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
            v["keyDir"] = json!(d);
        }),
        c("keyDir relative", 7, |v, _| v["keyDir"] = json!("keys")),
        c("logLevel unknown", 7, |v, _| v["logLevel"] = json!("loud")),
        c("enforcerPath missing", 7, |v, f| {
            v["enforcerPath"] = json!(f.path("nope"))
        }),
        c("enforcerPath relative", 7, |v, _| {
            v["enforcerPath"] = json!("trireme-enforcer")
        }),
        c("readyTimeoutMs too small", 7, |v, _| {
            v["readyTimeoutMs"] = json!(5)
        }),
        c("controlDir too long for a socket", 7, |v, f| {
            v["controlDir"] = json!(f.path(&"d".repeat(100)))
        }),
        c("no prevResult", 7, |v, _| {
            v.as_object_mut().unwrap().remove("prevResult");
        }),
        c("prevResult without interfaces", 7, |v, _| {
            v["prevResult"]
                .as_object_mut()
                .unwrap()
                .remove("interfaces");
        }),
        c("prevResult without the pod interface", 7, |v, _| {
            v["prevResult"]["interfaces"][2]["name"] = json!("eth9")
        }),
        c("prevResult pod interface without sandbox", 7, |v, _| {
            v["prevResult"]["interfaces"][2]
                .as_object_mut()
                .unwrap()
                .remove("sandbox");
        }),
        c("prevResult without IPs", 7, |v, _| {
            v["prevResult"]["ips"] = json!([])
        }),
        c(
            "label key invalid",
            7,
            |v, _| v["args"] = json!({"cni": {"labels": [{"key": "-app", "value": "x"}]}}),
        ),
        c(
            "label value too long",
            7,
            |v, _| {
                v["args"] = json!({"cni": {"labels": [{"key": "app", "value": "x".repeat(64)}]}})
            },
        ),
        c("args.cni.labels not a list", 7, |v, _| {
            v["args"] = json!({"cni": {"labels": {"app": "x"}}})
        }),
        c(
            "labels annotation not JSON",
            7,
            |v, _| {
                v["runtimeConfig"] =
                    json!({"io.kubernetes.cri.pod-annotations": {"trireme.io/labels": "app=x"}})
            },
        ),
        c("labels annotation with invalid key", 7, |v, _| {
            v["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations":
                {"trireme.io/labels": "{\"a b\":\"x\"}"}})
        }),
        c("ports annotation port 0", 7, |v, _| {
            v["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations":
                {"trireme.io/ports": "[{\"name\":\"http\",\"port\":0}]"}})
        }),
        c("ports annotation bad protocol", 7, |v, _| {
            v["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations":
                {"trireme.io/ports": "[{\"name\":\"http\",\"port\":80,\"protocol\":\"ICMP\"}]"}})
        }),
        Case {
            name: "pod interface absent from netns",
            code: 102,
            conf: |v, _| v["prevResult"]["interfaces"][2]["name"] = json!("eth1"),
            raw: None,
            env: &[("CNI_IFNAME", Some("eth1"))],
        },
        e("CNI_COMMAND missing", 4, &[("CNI_COMMAND", None)]),
        e("CNI_COMMAND unknown", 4, &[("CNI_COMMAND", Some("ATTACH"))]),
        e("CNI_CONTAINERID missing", 4, &[("CNI_CONTAINERID", None)]),
        e(
            "CNI_CONTAINERID invalid",
            4,
            &[("CNI_CONTAINERID", Some("-bad id"))],
        ),
        e("CNI_NETNS missing", 4, &[("CNI_NETNS", None)]),
        e("CNI_IFNAME invalid", 4, &[("CNI_IFNAME", Some("eth0/x"))]),
        e(
            "CNI_ARGS malformed",
            4,
            &[("CNI_ARGS", Some("K8S_POD_NAME"))],
        ),
        e(
            "namespace invalid",
            4,
            &[("CNI_ARGS", Some("K8S_POD_NAMESPACE=Not_Valid"))],
        ),
        e(
            "CNI_NETNS not a namespace",
            102,
            &[("CNI_NETNS", Some("/proc/self/cmdline"))],
        ),
        c(
            "enforcer that never becomes ready (rolled back)",
            100,
            |v, _| {
                v["enforcerPath"] = json!("/bin/false");
                v["readyTimeoutMs"] = json!(600);
                v["restartDelayMs"] = json!(50);
            },
        ),
    ]
}

#[test]
fn malformed_add_gives_the_right_code_and_leaves_nothing() {
    let fx = Fixture::new(Main::Bridge);
    // A real pod namespace with an eth0 (one end of a veth pair): every case fails before the enforcer is
    // ready, and must leave nothing.
    let ns = Netns::new("tm").unwrap();
    ns.exec(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
    ])
    .unwrap();
    ns.exec(&["ip", "link", "set", "eth0", "up"]).unwrap();
    let table = cases();
    assert!(table.len() >= 20);
    let mut failures = Vec::new();
    for case in &table {
        let mut conf = base_conf(&fx, &ns);
        (case.conf)(&mut conf, &fx);
        let stdin = match case.raw {
            Some(r) => r.to_vec(),
            None => serde_json::to_vec(&conf).unwrap(),
        };
        let mut cmd = Command::new(workspace_bin("trireme"));
        cmd.env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", "malformed1")
            .env("CNI_NETNS", ns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=p")
            .env("CNI_PATH", "/usr/lib/cni");
        for (k, v) in case.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let r = fx.rt.exec_raw("trireme", "ADD", cmd, &stdin);
        match r {
            Ok(out) => failures.push(format!("{}: succeeded: {out:?}", case.name)),
            Err(trireme_conformance::cni::Error::Plugin { err, .. }) => {
                if err.code != case.code {
                    failures.push(format!(
                        "{}: code {} (want {}): {}",
                        case.name, err.code, case.code, err.msg
                    ));
                }
                if err.msg.trim().is_empty() {
                    failures.push(format!("{}: empty message", case.name));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
        let left = fx.settle_leftovers(&[&ns]);
        if !left.is_empty() {
            failures.push(format!("{}: left behind {left:?}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn example_conflists_load_and_their_trireme_config_is_valid() {
    let fx = Fixture::new(Main::Bridge);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/conflists");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "conflist") {
            continue;
        }
        let list = trireme_conformance::NetworkConfigList::from_file(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let last = list.plugins.last().unwrap();
        assert_eq!(
            last["type"],
            "trireme",
            "{}: trireme must come last",
            p.display()
        );
        assert_eq!(
            last["capabilities"]["io.kubernetes.cri.pod-annotations"],
            true,
            "{}",
            p.display()
        );
        // The example's own settings, with this machine's key and policy directories.
        let mut conf = last.clone();
        conf["cniVersion"] = json!("1.1.0");
        conf["name"] = json!(list.name);
        conf["policyDir"] = json!(fx.path("policies"));
        conf["keyDir"] = json!(fx.path("keys"));
        fx.rt
            .exec("trireme", "STATUS", None, &conf)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        seen += 1;
    }
    assert!(seen >= 3, "expected the bridge, ptp and flannel examples");
}
