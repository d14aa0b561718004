//! The embedded store: a folder of Kubernetes manifests, read once when the binary starts.
//!
//! The files are the ones a user would `kubectl apply`: any name, YAML with `---` between
//! documents, or JSON (which is YAML), optionally wrapped in a `kind: List`. Only core/v1 Pods and
//! `k8s.cni.cncf.io/v1` NetworkAttachmentDefinitions are kept; everything else in the folder
//! (Deployments, a Plexus conf, a README) is not ours to judge and is skipped.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use super::{Nad, NetworkStore, Pod, StoreError};

/// Files above this size are refused rather than parsed: a manifests folder holds a handful of
/// small objects, and the CNI binary runs on every pod start.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

const POD: &str = "Pod";
const NAD: &str = "NetworkAttachmentDefinition";
const POD_API: &str = "v1";
const NAD_API: &str = "k8s.cni.cncf.io/v1";

/// Pods and NADs loaded from a folder of manifests, looked up by exact namespace/name.
#[derive(Debug, Clone)]
pub struct ManifestStore {
    dir: PathBuf,
    pods: BTreeMap<(String, String), Pod>,
    nads: BTreeMap<(String, String), Nad>,
}

enum Object {
    Pod(Pod),
    Nad(Nad),
}

/// Objects found so far, with where each came from so a duplicate can name both places.
#[derive(Default)]
struct Loader {
    pods: BTreeMap<(String, String), (Pod, String)>,
    nads: BTreeMap<(String, String), (Nad, String)>,
}

impl ManifestStore {
    /// Reads every regular file directly in `dir` (not recursive). Symlinks are followed and
    /// hidden entries skipped, which is what a ConfigMap volume needs: its files are symlinks
    /// into a hidden `..data` directory.
    pub fn open(dir: &Path) -> Result<ManifestStore, StoreError> {
        let read_dir_err = |source| StoreError::ReadDir {
            path: dir.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(read_dir_err)? {
            let entry = entry.map_err(read_dir_err)?;
            if entry.file_name().as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let path = entry.path();
            let meta = fs::metadata(&path).map_err(|source| StoreError::ReadFile {
                path: path.clone(),
                source,
            })?;
            if meta.is_file() {
                files.push(path);
            }
        }
        // read_dir order is filesystem-dependent; sorting keeps duplicate errors reproducible.
        files.sort();

        let mut loader = Loader::default();
        for path in &files {
            let text = read_limited(path)?;
            loader.add_file(path, &text)?;
        }
        Ok(loader.into_store(dir))
    }

    /// The objects of one manifest file's text, as [`ManifestStore::open`] reads each file
    /// (`name` stands in for the file's path in errors): for the fuzzer, which has no folder.
    pub fn from_text(name: &str, text: &str) -> Result<ManifestStore, StoreError> {
        let mut loader = Loader::default();
        loader.add_file(Path::new(name), text)?;
        Ok(loader.into_store(Path::new("")))
    }

    /// The folder this store was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every pod, ordered by namespace then name.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values()
    }

    /// Every NAD, ordered by namespace then name.
    pub fn nads(&self) -> impl Iterator<Item = &Nad> {
        self.nads.values()
    }
}

impl NetworkStore for ManifestStore {
    fn pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, StoreError> {
        Ok(self
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .cloned())
    }

    fn nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, StoreError> {
        Ok(self
            .nads
            .get(&(namespace.to_string(), name.to_string()))
            .cloned())
    }

    fn kind(&self) -> &'static str {
        "manifests"
    }
}

fn read_limited(path: &Path) -> Result<String, StoreError> {
    let io_err = |source| StoreError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path).map_err(io_err)?;
    // Sized from the stat, so a manifest is read in one call rather than in doubling chunks
    // from 32 bytes (read_to_end's probing without a size hint): a store read opens them all.
    let hint = file
        .metadata()
        .map_or(0, |m| m.len().min(MAX_MANIFEST_BYTES + 1));
    let mut bytes = Vec::with_capacity(hint as usize);
    // Read one byte past the limit instead of trusting the earlier stat: the file may grow.
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    let size = bytes.len() as u64;
    if size > MAX_MANIFEST_BYTES {
        return Err(StoreError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit: MAX_MANIFEST_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|e| StoreError::Parse {
        path: path.to_path_buf(),
        reason: format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })
}

impl Loader {
    fn into_store(self, dir: &Path) -> ManifestStore {
        ManifestStore {
            dir: dir.to_path_buf(),
            pods: self.pods.into_iter().map(|(k, (p, _))| (k, p)).collect(),
            nads: self.nads.into_iter().map(|(k, (n, _))| (k, n)).collect(),
        }
    }

    fn add_file(&mut self, path: &Path, text: &str) -> Result<(), StoreError> {
        let mut options = serde_saphyr::Options::default();
        // The message ends up in a one-line CNI error; the snippet would add a multi-line
        // excerpt of the file to it.
        options.with_snippet = false;
        // YAML 1.1 would read a NAD named `no` or an annotation value `on` as a boolean and
        // then reject it as "not a string"; only true/false are booleans in YAML 1.2.
        options.strict_booleans = true;
        let docs: Vec<Spanned<Value>> = serde_saphyr::from_multiple_with_options(text, options)
            .map_err(|e| StoreError::Parse {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        for (index, doc) in docs.iter().enumerate() {
            let origin = format!(
                "{} document {} (line {})",
                path.display(),
                index + 1,
                doc.referenced.line()
            );
            self.add_document(&doc.value, &origin)?;
        }
        Ok(())
    }

    fn add_document(&mut self, doc: &Value, origin: &str) -> Result<(), StoreError> {
        let Some(map) = doc.as_object() else {
            return Ok(());
        };
        // `kubectl get -o yaml` of several objects gives `kind: List`; the API server's typed
        // lists leave kind/apiVersion out of their items, so those are implied by the list kind.
        let implied = match map.get("kind").and_then(Value::as_str) {
            Some("List") => None,
            Some("PodList") => Some(POD),
            Some("NetworkAttachmentDefinitionList") => Some(NAD),
            _ => return self.add_object(map, None, origin),
        };
        let items = match map.get("items") {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(malformed(origin, "items is not a list")),
        };
        for (i, item) in items.iter().enumerate() {
            let item_origin = format!("{origin} items[{i}]");
            let Some(item_map) = item.as_object() else {
                return Err(malformed(&item_origin, "list item is not a mapping"));
            };
            self.add_object(item_map, implied, &item_origin)?;
        }
        Ok(())
    }

    fn add_object(
        &mut self,
        map: &Map<String, Value>,
        implied_kind: Option<&'static str>,
        origin: &str,
    ) -> Result<(), StoreError> {
        let object =
            parse_object(map, implied_kind).map_err(|reason| malformed(origin, &reason))?;
        match object {
            None => Ok(()),
            Some(Object::Pod(pod)) => {
                let key = (pod.namespace.clone(), pod.name.clone());
                insert_unique(&mut self.pods, key, pod, POD, origin)
            }
            Some(Object::Nad(nad)) => {
                let key = (nad.namespace.clone(), nad.name.clone());
                insert_unique(&mut self.nads, key, nad, NAD, origin)
            }
        }
    }
}

fn insert_unique<T>(
    objects: &mut BTreeMap<(String, String), (T, String)>,
    key: (String, String),
    object: T,
    kind: &'static str,
    origin: &str,
) -> Result<(), StoreError> {
    match objects.entry(key) {
        // kubectl apply would let the later one win silently; for a network definition that
        // hides a mistake, so two definitions of one object are an error.
        Entry::Occupied(first) => {
            let (namespace, name) = first.key().clone();
            Err(StoreError::Duplicate {
                kind,
                namespace,
                name,
                first: first.get().1.clone(),
                second: origin.to_string(),
            })
        }
        Entry::Vacant(slot) => {
            slot.insert((object, origin.to_string()));
            Ok(())
        }
    }
}

fn malformed(origin: &str, reason: &str) -> StoreError {
    StoreError::Malformed {
        origin: origin.to_string(),
        reason: reason.to_string(),
    }
}

/// `Ok(None)` for anything that is not a Pod or NAD. A document that says it is one but has the
/// wrong shape is an error: skipping it would turn a typo into a missing network.
fn parse_object(
    map: &Map<String, Value>,
    implied_kind: Option<&'static str>,
) -> Result<Option<Object>, String> {
    let Some(kind) = object_kind(map, implied_kind)? else {
        return Ok(None);
    };
    let meta = match map.get("metadata") {
        Some(Value::Object(meta)) => meta,
        _ => return Err(format!("{kind} has no metadata.name")),
    };
    let name = match meta.get("name") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        None | Some(Value::Null) => return Err(format!("{kind} has no metadata.name")),
        Some(_) => {
            return Err(format!(
                "{kind} metadata.name is not a non-empty string (quote it)"
            ));
        }
    };
    // An empty namespace means the default one to the API server too.
    let namespace = match meta.get("namespace") {
        Some(Value::String(ns)) if !ns.is_empty() => ns.clone(),
        None | Some(Value::Null) | Some(Value::String(_)) => "default".to_string(),
        Some(_) => return Err(format!("{kind} {name}: metadata.namespace is not a string")),
    };
    let annotations = string_map(meta.get("annotations"))
        .map_err(|reason| format!("{kind} {namespace}/{name}: metadata.annotations {reason}"))?;
    if kind == POD {
        let uid = match meta.get("uid") {
            None | Some(Value::Null) => None,
            Some(Value::String(uid)) => Some(uid.clone()),
            Some(_) => {
                return Err(format!(
                    "Pod {namespace}/{name}: metadata.uid is not a string"
                ));
            }
        };
        return Ok(Some(Object::Pod(Pod {
            namespace,
            name,
            uid,
            annotations,
        })));
    }
    let config = nad_config(map, &format!("{kind} {namespace}/{name}"))?;
    Ok(Some(Object::Nad(Nad {
        namespace,
        name,
        annotations,
        config,
    })))
}

/// The document's kind when it is a Pod or a NAD with the matching `apiVersion`; `None` for
/// any other kind. A file of one kind may leave both out (`implied_kind`).
fn object_kind(
    map: &Map<String, Value>,
    implied_kind: Option<&'static str>,
) -> Result<Option<&'static str>, String> {
    let kind = match map.get("kind") {
        Some(Value::String(kind)) => kind.as_str(),
        None | Some(Value::Null) => match implied_kind {
            Some(kind) => kind,
            None => return Ok(None),
        },
        Some(_) => return Ok(None),
    };
    let (kind, expected_api) = match kind {
        POD => (POD, POD_API),
        NAD => (NAD, NAD_API),
        _ => return Ok(None),
    };
    match map.get("apiVersion") {
        Some(Value::String(api)) if api == expected_api => Ok(Some(kind)),
        None | Some(Value::Null) if implied_kind.is_some() => Ok(Some(kind)),
        Some(Value::String(api)) => Err(format!(
            "kind {kind} needs apiVersion {expected_api}, found {api}"
        )),
        _ => Err(format!("kind {kind} needs apiVersion {expected_api}")),
    }
}

/// A NAD's `spec.config`; `None` when it has none (or an empty one). `what` names the NAD.
fn nad_config(map: &Map<String, Value>, what: &str) -> Result<Option<String>, String> {
    match map.get("spec") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(spec)) => match spec.get("config") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(config)) if config.trim().is_empty() => Ok(None),
            Some(Value::String(config)) => Ok(Some(config.clone())),
            Some(_) => Err(format!(
                "{what}: spec.config is not a string (it holds the CNI \
                 conf as JSON text; quote it or use a block scalar `config: |`)"
            )),
        },
        Some(_) => Err(format!("{what}: spec is not a mapping")),
    }
}

fn string_map(value: Option<&Value>) -> Result<BTreeMap<String, String>, String> {
    let map = match value {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err("is not a mapping".to_string()),
    };
    map.iter()
        .map(|(key, value)| match value {
            Value::String(s) => Ok((key.clone(), s.clone())),
            _ => Err(format!("{key:?} is not a string (quote the value)")),
        })
        .collect()
}
