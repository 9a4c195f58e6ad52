//! Loading Kubernetes objects (NetworkPolicy, Namespace, Pod, lists of them) into a
//! [`Cluster`]: pure parsing from strings plus a thin directory reader.

use crate::engine::{compile_policy, policy_object_name, Engine};
use crate::error::{FieldError, PolicyError};
use crate::identity::{Identity, NamedPort, Protocol, NAMESPACE_NAME_LABEL};
use crate::selector::{check_label_key, check_label_value, valid_dns_subdomain, valid_port_name};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A pod as policy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `status.podIP`, if set.
    pub ip: Option<IpAddr>,
    /// Named ports of `spec.containers[].ports[]` (ports without a name are left out).
    pub ports: Vec<NamedPort>,
}

/// Everything loaded from a set of manifests: validated policies, namespaces and pods.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// Valid `networking.k8s.io/v1` NetworkPolicies, in input order.
    pub policies: Vec<NetworkPolicy>,
    /// Namespace name -> labels. Always contains `kubernetes.io/metadata.name`; a namespace
    /// that only a pod refers to exists implicitly with just that label.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Pods in input order.
    pub pods: Vec<PodInfo>,
    /// Documents that were skipped (other kinds), one line each, e.g.
    /// `deploy.yaml: document 2: ignored apps/v1 Deployment default/web`.
    pub ignored: Vec<String>,
}

impl Cluster {
    /// Parses one in-memory source (YAML, multi-document YAML or JSON); `name` is used in
    /// error messages. Pure: no I/O.
    pub fn parse_str(name: &str, text: &str) -> Result<Cluster, PolicyError> {
        Cluster::parse_sources([(name, text)])
    }

    /// Parses several sources as one input set (duplicates across sources are errors).
    pub fn parse_sources<'a>(
        sources: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Cluster, PolicyError> {
        let mut b = Builder::default();
        for (name, text) in sources {
            b.source(name, text)?;
        }
        Ok(b.finish())
    }

    /// Reads files and directories (directories recursively, `*.yaml`, `*.yml`, `*.json`,
    /// in sorted path order, skipping entries whose name starts with `.` such as the
    /// `..data` links of a mounted ConfigMap). A file named explicitly is read whatever its
    /// extension. Any error: nothing is returned.
    pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Cluster, PolicyError> {
        let mut files = Vec::new();
        for p in paths {
            let p = p.as_ref();
            let md = std::fs::metadata(p).map_err(|source| PolicyError::Io {
                path: p.to_path_buf(),
                source,
            })?;
            if md.is_dir() {
                let mut found = Vec::new();
                walk(p, &mut found, 0)?;
                found.sort();
                files.extend(found);
            } else {
                files.push(p.to_path_buf());
            }
        }
        let mut texts = Vec::with_capacity(files.len());
        for f in &files {
            let text = std::fs::read_to_string(f).map_err(|source| PolicyError::Io {
                path: f.clone(),
                source,
            })?;
            texts.push((f.display().to_string(), text));
        }
        Cluster::parse_sources(texts.iter().map(|(n, t)| (n.as_str(), t.as_str())))
    }

    /// The pod `namespace/name`, if loaded.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodInfo> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    /// Labels of a namespace (always with `kubernetes.io/metadata.name`), if it exists.
    pub fn namespace_labels(&self, namespace: &str) -> Option<&BTreeMap<String, String>> {
        self.namespaces.get(namespace)
    }

    /// The identity of pod `namespace/name`: its labels, named ports, and its namespace's
    /// labels.
    pub fn identity_of(&self, namespace: &str, name: &str) -> Option<Identity> {
        self.pod(namespace, name).map(|p| self.identity_of_pod(p))
    }

    /// The identity of a loaded pod.
    pub fn identity_of_pod(&self, pod: &PodInfo) -> Identity {
        let namespace_labels = self
            .namespaces
            .get(&pod.namespace)
            .cloned()
            .unwrap_or_else(|| implicit_namespace_labels(&pod.namespace));
        Identity {
            namespace: pod.namespace.clone(),
            labels: pod.labels.clone(),
            namespace_labels,
            ports: pod.ports.clone(),
        }
    }

    /// The decision engine for the loaded policies.
    pub fn engine(&self) -> Engine {
        Engine::new(&self.policies)
    }
}

fn implicit_namespace_labels(ns: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), ns.to_string())])
}

const MAX_DEPTH: usize = 32;

fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<(), PolicyError> {
    let io = |source| PolicyError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if depth > MAX_DEPTH {
        return Err(io(std::io::Error::other(format!(
            "directories nested deeper than {MAX_DEPTH} levels (a symlink loop?)"
        ))));
    }
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let md = std::fs::metadata(&path).map_err(|source| PolicyError::Io {
            path: path.clone(),
            source,
        })?;
        if md.is_dir() {
            walk(&path, out, depth + 1)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

#[derive(Default)]
struct Builder {
    cluster: Cluster,
    /// (kind, object) -> source where first seen.
    seen: HashMap<(&'static str, String), String>,
}

/// Where a document came from, for messages.
struct Origin<'a> {
    file: &'a str,
    doc: usize,
}

impl Builder {
    fn source(&mut self, name: &str, text: &str) -> Result<(), PolicyError> {
        let docs = parse_documents(name, text)?;
        for (i, v) in docs.into_iter().enumerate() {
            let origin = Origin {
                file: name,
                doc: i + 1,
            };
            self.document(&origin, v, None)?;
        }
        Ok(())
    }

    /// One object; `list_kind` is set for items of a typed list (`PodList`), whose items
    /// may omit apiVersion and kind.
    fn document(
        &mut self,
        o: &Origin,
        mut v: Value,
        list_type: Option<(&str, &str)>,
    ) -> Result<(), PolicyError> {
        if v.is_null() {
            return Ok(()); // empty document, e.g. a trailing `---`
        }
        let not_object = |message: String| PolicyError::NotAnObject {
            file: o.file.to_string(),
            doc: o.doc,
            message,
        };
        let Some(map) = v.as_object_mut() else {
            return Err(not_object(
                "not a mapping (expected a Kubernetes object)".into(),
            ));
        };
        if let Some((api, kind)) = list_type {
            map.entry("apiVersion").or_insert_with(|| api.into());
            map.entry("kind").or_insert_with(|| kind.into());
        }
        let api = match map.get("apiVersion") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(not_object("missing apiVersion".into())),
        };
        let kind = match map.get("kind") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(not_object("missing kind".into())),
        };
        let meta_name = |map: &serde_json::Map<String, Value>, key: &str| {
            map.get("metadata")
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let name = meta_name(map, "name").unwrap_or_else(|| "<unnamed>".into());
        let object = match meta_name(map, "namespace") {
            _ if kind == "Namespace" || kind.ends_with("List") => name,
            Some(ns) => format!("{ns}/{name}"),
            None => format!("default/{name}"),
        };
        match (api.as_str(), kind.as_str()) {
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                let original = v.clone();
                let np: NetworkPolicy = decode(o, &kind, &object, v)?;
                // Strict, as `kubectl apply` validates fields: a misspelt or misindented
                // key (`ingres:`, `ingress:` outside `spec`) must not be silently dropped.
                let decoded = serde_json::to_value(&np).unwrap_or(Value::Null);
                if let Some(field) = unknown_field(&original, &decoded, "") {
                    return Err(PolicyError::Invalid {
                        file: o.file.into(),
                        kind,
                        object,
                        field,
                        message: "unknown field".into(),
                    });
                }
                self.policy(o, np)
            }
            ("v1", "Namespace") => {
                let ns: Namespace = decode(o, &kind, &object, v)?;
                self.namespace(o, ns)
            }
            ("v1", "Pod") => {
                let pod: Pod = decode(o, &kind, &object, v)?;
                self.pod(o, pod)
            }
            (_, k) if k.ends_with("List") => {
                let item_type =
                    (k != "List").then(|| (api.clone(), k.trim_end_matches("List").to_string()));
                let items = match map.remove("items") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(items)) => items,
                    Some(_) => {
                        return Err(PolicyError::Invalid {
                            file: o.file.into(),
                            kind,
                            object,
                            field: "items".into(),
                            message: "must be a list".into(),
                        })
                    }
                };
                for item in items {
                    self.document(
                        o,
                        item,
                        item_type.as_ref().map(|(a, k)| (a.as_str(), k.as_str())),
                    )?;
                }
                Ok(())
            }
            _ => {
                self.cluster.ignored.push(format!(
                    "{}: document {}: ignored {api} {kind} {object}",
                    o.file, o.doc
                ));
                Ok(())
            }
        }
    }

    fn once(&mut self, o: &Origin, kind: &'static str, object: &str) -> Result<(), PolicyError> {
        let here = format!("{} (document {})", o.file, o.doc);
        if let Some(first) = self.seen.get(&(kind, object.to_string())) {
            return Err(PolicyError::Duplicate {
                kind: kind.into(),
                object: object.into(),
                first: first.clone(),
                second: here,
            });
        }
        self.seen.insert((kind, object.to_string()), here);
        Ok(())
    }

    fn policy(&mut self, o: &Origin, np: NetworkPolicy) -> Result<(), PolicyError> {
        let object = policy_object_name(&np);
        let mut errs = Vec::new();
        compile_policy(&np, &mut errs);
        check_metadata_namespace(np.metadata.namespace.as_deref(), &mut errs);
        first_error(o, "NetworkPolicy", &object, errs)?;
        self.once(o, "NetworkPolicy", &object)?;
        self.cluster.policies.push(np);
        Ok(())
    }

    fn namespace(&mut self, o: &Origin, ns: Namespace) -> Result<(), PolicyError> {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let mut errs = Vec::new();
        if !valid_dns_label(&name) {
            errs.push(FieldError::new(
                "metadata.name",
                format!(
                    "invalid namespace name {name:?} (lowercase alphanumerics and '-', at most 63)"
                ),
            ));
        }
        let mut labels = ns.metadata.labels.clone().unwrap_or_default();
        check_labels(&labels, "metadata.labels", &mut errs);
        first_error(o, "Namespace", &name, errs)?;
        self.once(o, "Namespace", &name)?;
        labels.insert(NAMESPACE_NAME_LABEL.into(), name.clone());
        self.cluster.namespaces.insert(name, labels);
        Ok(())
    }

    fn pod(&mut self, o: &Origin, pod: Pod) -> Result<(), PolicyError> {
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let object = format!("{namespace}/{name}");
        let mut errs = Vec::new();
        if name.is_empty() {
            errs.push(FieldError::new("metadata.name", "is required"));
        }
        check_metadata_namespace(pod.metadata.namespace.as_deref(), &mut errs);
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        check_labels(&labels, "metadata.labels", &mut errs);
        let ip = match pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()) {
            None | Some("") => None,
            Some(s) => match s.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    errs.push(FieldError::new(
                        "status.podIP",
                        format!("invalid IP address {s:?}"),
                    ));
                    None
                }
            },
        };
        let mut ports = Vec::new();
        for (ci, c) in pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .enumerate()
        {
            for (pi, p) in c.ports.iter().flatten().enumerate() {
                let path = format!("spec.containers[{ci}].ports[{pi}]");
                let Some(pname) = &p.name else { continue };
                if !valid_port_name(pname) {
                    errs.push(FieldError::new(
                        format!("{path}.name"),
                        format!("invalid port name {pname:?} (1-15 lowercase alphanumerics and '-', at least one letter)"),
                    ));
                }
                if !(1..=65535).contains(&p.container_port) {
                    errs.push(FieldError::new(
                        format!("{path}.containerPort"),
                        format!("port {} is out of range 1-65535", p.container_port),
                    ));
                    continue;
                }
                let protocol = match p.protocol.as_deref() {
                    None | Some("TCP") => Protocol::Tcp,
                    Some("UDP") => Protocol::Udp,
                    Some("SCTP") => Protocol::Sctp,
                    Some(other) => {
                        errs.push(FieldError::new(
                            format!("{path}.protocol"),
                            format!("unknown protocol {other:?} (expected TCP, UDP or SCTP)"),
                        ));
                        continue;
                    }
                };
                ports.push(NamedPort {
                    name: pname.clone(),
                    port: p.container_port as u16,
                    protocol,
                });
            }
        }
        first_error(o, "Pod", &object, errs)?;
        self.once(o, "Pod", &object)?;
        self.cluster.pods.push(PodInfo {
            namespace,
            name,
            labels,
            ip,
            ports,
        });
        Ok(())
    }

    fn finish(mut self) -> Cluster {
        for p in &self.cluster.pods {
            self.cluster
                .namespaces
                .entry(p.namespace.clone())
                .or_insert_with(|| implicit_namespace_labels(&p.namespace));
        }
        self.cluster
    }
}

fn valid_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && valid_dns_subdomain(s)
}

fn check_metadata_namespace(ns: Option<&str>, errs: &mut Vec<FieldError>) {
    if let Some(ns) = ns {
        if !valid_dns_label(ns) {
            errs.push(FieldError::new(
                "metadata.namespace",
                format!("invalid namespace name {ns:?}"),
            ));
        }
    }
}

fn check_labels(labels: &BTreeMap<String, String>, path: &str, errs: &mut Vec<FieldError>) {
    for (k, v) in labels {
        let p = format!("{path}[{k}]");
        check_label_key(k, &p, errs);
        check_label_value(v, &p, errs);
    }
}

fn first_error(
    o: &Origin,
    kind: &str,
    object: &str,
    errs: Vec<FieldError>,
) -> Result<(), PolicyError> {
    match errs.into_iter().next() {
        None => Ok(()),
        Some(e) => Err(PolicyError::Invalid {
            file: o.file.into(),
            kind: kind.into(),
            object: object.into(),
            field: e.field,
            message: e.message,
        }),
    }
}

fn decode<T: DeserializeOwned>(
    o: &Origin,
    kind: &str,
    object: &str,
    v: Value,
) -> Result<T, PolicyError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let field = e.path().to_string();
        PolicyError::Invalid {
            file: o.file.into(),
            kind: kind.into(),
            object: object.into(),
            field: if field == "." {
                "<object>".into()
            } else {
                field
            },
            message: e.into_inner().to_string(),
        }
    })
}

/// The first key (as a field path) present in `original` but not in `decoded` (the
/// re-serialised typed object), ignoring null values.
fn unknown_field(original: &Value, decoded: &Value, path: &str) -> Option<String> {
    match (original, decoded) {
        (Value::Object(o), Value::Object(d)) => o.iter().find_map(|(k, v)| {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match d.get(k) {
                None if v.is_null() => None,
                None => Some(p),
                Some(dv) => unknown_field(v, dv, &p),
            }
        }),
        (Value::Array(o), Value::Array(d)) => o
            .iter()
            .zip(d)
            .enumerate()
            .find_map(|(i, (ov, dv))| unknown_field(ov, dv, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// Splits a source into documents: JSON (one or more concatenated values) when it starts
/// with `{` or `[`, otherwise (multi-document) YAML.
fn parse_documents(name: &str, text: &str) -> Result<Vec<Value>, PolicyError> {
    let trimmed = text.trim_start();
    let mut out = Vec::new();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        for (i, v) in serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .enumerate()
        {
            out.push(v.map_err(|e| PolicyError::Syntax {
                file: name.into(),
                doc: i + 1,
                message: e.to_string(),
            })?);
        }
    } else {
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            out.push(Value::deserialize(doc).map_err(|e| PolicyError::Syntax {
                file: name.into(),
                doc: i + 1,
                message: e.to_string(),
            })?);
        }
    }
    Ok(out)
}
