//! The manifests store: a folder of the YAML/JSON a user would `kubectl apply`.

use std::path::Path;

use plexus::store::{MAX_MANIFEST_BYTES, ManifestStore, NetworkStore, StoreError};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/examples");

fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("create temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write manifest");
    }
    dir
}

fn open(files: &[(&str, &str)]) -> Result<ManifestStore, StoreError> {
    let dir = folder(files);
    ManifestStore::open(dir.path())
}

const NAD_BLUE: &str = r#"
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: blue
  namespace: team
spec:
  config: '{"cniVersion":"1.0.0","name":"blue","type":"bridge"}'
"#;

#[test]
fn multi_document_yaml_yields_every_pod_and_nad() {
    let text = format!(
        "{NAD_BLUE}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: team\n  \
         uid: 1234-abcd\n  annotations:\n    k8s.v1.cni.cncf.io/networks: blue@data0\n---\n\
         apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  \
         name: red\n  namespace: team\n"
    );
    let store = open(&[("all.yaml", &text)]).unwrap();

    let blue = store.nad("team", "blue").unwrap().unwrap();
    assert_eq!(
        blue.config.as_deref(),
        Some(r#"{"cniVersion":"1.0.0","name":"blue","type":"bridge"}"#)
    );
    let red = store.nad("team", "red").unwrap().unwrap();
    assert_eq!(red.config, None, "a NAD without spec has no config");

    let web = store.pod("team", "web").unwrap().unwrap();
    assert_eq!(web.uid.as_deref(), Some("1234-abcd"));
    assert_eq!(
        web.annotations
            .get("k8s.v1.cni.cncf.io/networks")
            .map(String::as_str),
        Some("blue@data0")
    );
    assert_eq!(store.kind(), "manifests");
    assert_eq!(store.pods().count(), 1);
    assert_eq!(store.nads().count(), 2);
}

#[test]
fn json_file_is_read() {
    let json = r#"{
      "apiVersion": "v1",
      "kind": "Pod",
      "metadata": {"name": "api", "namespace": "shop",
                   "annotations": {"k8s.v1.cni.cncf.io/networks": "[{\"name\":\"blue\"}]"}},
      "spec": {"containers": [{"name": "api", "image": "busybox"}]}
    }"#;
    let store = open(&[("pod.json", json)]).unwrap();
    let pod = store.pod("shop", "api").unwrap().unwrap();
    assert_eq!(
        pod.annotations["k8s.v1.cni.cncf.io/networks"],
        r#"[{"name":"blue"}]"#
    );
    assert_eq!(pod.uid, None);
}

#[test]
fn list_kind_items_are_read_in_yaml_and_json() {
    let json_list = r#"{"apiVersion":"v1","kind":"List","items":[
      {"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}},
      {"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"ignored"}},
      {"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition",
       "metadata":{"name":"n1"},"spec":{"config":"{}"}}]}"#;
    // `kubectl get pods -o yaml` output: typed list, items without kind/apiVersion.
    let pod_list =
        "apiVersion: v1\nkind: PodList\nitems:\n- metadata:\n    name: b\n    namespace: x\n";
    let store = open(&[("list.json", json_list), ("podlist.yaml", pod_list)]).unwrap();
    assert!(store.pod("default", "a").unwrap().is_some());
    assert!(store.pod("x", "b").unwrap().is_some());
    assert_eq!(
        store
            .nad("default", "n1")
            .unwrap()
            .unwrap()
            .config
            .as_deref(),
        Some("{}")
    );
    assert_eq!(store.pods().count(), 2);
}

#[test]
fn missing_namespace_means_default() {
    let store = open(&[(
        "nad.yaml",
        "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: plain\n",
    )])
    .unwrap();
    assert!(store.nad("default", "plain").unwrap().is_some());
    assert_eq!(store.nad("kube-system", "plain").unwrap(), None);
}

#[test]
fn other_kinds_and_non_manifests_are_ignored() {
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n";
    let configmap = "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\ndata:\n  a: b\n";
    let store = open(&[
        ("deploy.yaml", deployment),
        ("cm.yaml", configmap),
        ("notes.txt", "just some words\n"),
        (
            "conf.json",
            r#"{"cniVersion":"1.1.0","name":"plexus","type":"plexus"}"#,
        ),
        ("empty.yaml", ""),
    ])
    .unwrap();
    assert_eq!(store.pods().count(), 0);
    assert_eq!(store.nads().count(), 0);
    assert_eq!(store.pod("default", "web").unwrap(), None);
}

#[test]
fn hidden_files_and_subfolders_are_skipped() {
    let dir = folder(&[(
        ".hidden.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: secret\n",
    )]);
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(
        dir.path().join("sub/pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nested\n",
    )
    .unwrap();
    let store = ManifestStore::open(dir.path()).unwrap();
    assert_eq!(store.pods().count(), 0);
}

#[test]
fn symlinked_files_are_followed_like_a_configmap_volume() {
    // A ConfigMap volume: visible names are symlinks into the hidden ..data directory.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("..data")).unwrap();
    std::fs::write(dir.path().join("..data/nads.yaml"), NAD_BLUE).unwrap();
    std::os::unix::fs::symlink("..data/nads.yaml", dir.path().join("nads.yaml")).unwrap();
    let store = ManifestStore::open(dir.path()).unwrap();
    assert_eq!(
        store.nads().count(),
        1,
        "read once through the symlink, not twice"
    );
    assert!(store.nad("team", "blue").unwrap().is_some());
}

#[test]
fn duplicate_across_files_names_both_files() {
    let err = open(&[("a.yaml", NAD_BLUE), ("b.yaml", NAD_BLUE)]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Duplicate { .. }), "{err:?}");
    assert!(msg.contains("team/blue"), "{msg}");
    assert!(msg.contains("a.yaml") && msg.contains("b.yaml"), "{msg}");
    assert_eq!(err.code(), cni::Code::InvalidConfig);
}

#[test]
fn same_name_different_kind_or_namespace_is_no_duplicate() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: blue\n  namespace: team\n";
    let other_ns = NAD_BLUE.replace("namespace: team", "namespace: other");
    let store = open(&[("a.yaml", NAD_BLUE), ("b.yaml", pod), ("c.yaml", &other_ns)]).unwrap();
    assert!(store.pod("team", "blue").unwrap().is_some());
    assert!(store.nad("team", "blue").unwrap().is_some());
    assert!(store.nad("other", "blue").unwrap().is_some());
}

#[test]
fn malformed_documents_name_the_file_and_document() {
    let cases: &[(&str, &str)] = &[
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  namespace: x\n",
            "no metadata.name",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    count: 3\n",
            "\"count\" is not a string",
        ),
        (
            "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  \
             name: net\nspec:\n  config:\n    type: bridge\n",
            "spec.config is not a string",
        ),
        (
            "apiVersion: k8s.cni.cncf.io/v1beta1\nkind: NetworkAttachmentDefinition\n\
             metadata:\n  name: n\n",
            "needs apiVersion k8s.cni.cncf.io/v1",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [a, b]\n",
            "metadata.name",
        ),
    ];
    for (bad, reason) in cases {
        // The bad object is the second document, after a good one.
        let text = format!("{NAD_BLUE}---\n{bad}");
        let err = open(&[
            ("ok.yaml", NAD_BLUE.replace("blue", "green").as_str()),
            ("bad.yaml", &text),
        ])
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, StoreError::Malformed { .. }),
            "{bad}: {err:?}"
        );
        assert_eq!(err.code(), cni::Code::InvalidConfig);
        assert!(msg.contains("bad.yaml document 2"), "{msg}");
        assert!(msg.contains(reason), "expected {reason:?} in {msg}");
    }
}

#[test]
fn malformed_list_item_names_its_index() {
    let list = r#"{"apiVersion":"v1","kind":"List","items":[
      {"apiVersion":"v1","kind":"Pod","metadata":{"name":"ok"}},
      {"apiVersion":"v1","kind":"Pod","metadata":{}}]}"#;
    let err = open(&[("list.json", list)]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("list.json document 1") && msg.contains("items[1]"),
        "{msg}"
    );
}

#[test]
fn yaml_1_1_boolean_words_stay_strings() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: no\n  namespace: on\n  \
                annotations:\n    example.com/enabled: yes\n";
    let store = open(&[("pod.yaml", text)]).unwrap();
    let pod = store.pod("on", "no").unwrap().unwrap();
    assert_eq!(pod.annotations["example.com/enabled"], "yes");
}

#[test]
fn yaml_syntax_error_names_the_file() {
    let err = open(&[("broken.yaml", "kind: Pod\nmetadata: {name: [unclosed\n")]).unwrap_err();
    assert!(matches!(err, StoreError::Parse { .. }), "{err:?}");
    assert!(err.to_string().contains("broken.yaml"), "{err}");
    assert_eq!(err.code(), cni::Code::InvalidConfig);
}

#[test]
fn binary_file_is_a_parse_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blob.bin"), [0xff, 0xfe, 0x00, 0x80]).unwrap();
    let err = ManifestStore::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("blob.bin"), "{err}");
    assert_eq!(err.code(), cni::Code::InvalidConfig);
}

#[test]
fn oversized_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let big = "#".repeat(MAX_MANIFEST_BYTES as usize + 1);
    std::fs::write(dir.path().join("huge.yaml"), big).unwrap();
    let err = ManifestStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("huge.yaml"), "{err}");
    assert_eq!(err.code(), cni::Code::InvalidConfig);
}

#[test]
fn missing_folder_is_an_io_error() {
    let err = ManifestStore::open(Path::new("/nonexistent/plexus-manifests")).unwrap_err();
    assert!(matches!(err, StoreError::ReadDir { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/plexus-manifests"),
        "{err}"
    );
    assert_eq!(err.code(), cni::Code::Io);
}

#[test]
fn missing_objects_are_none_not_errors() {
    let store = open(&[("a.yaml", NAD_BLUE)]).unwrap();
    assert_eq!(store.pod("team", "nobody").unwrap(), None);
    assert_eq!(store.nad("team", "nothing").unwrap(), None);
    // Lookup is exact: no namespace fallback, no case folding.
    assert_eq!(store.nad("default", "blue").unwrap(), None);
    assert_eq!(store.nad("team", "Blue").unwrap(), None);
}

#[test]
fn examples_folder_loads_with_the_demo_objects() {
    let store = ManifestStore::open(Path::new(EXAMPLES)).unwrap();

    let nads: Vec<String> = store
        .nads()
        .map(|n| format!("{}/{}", n.namespace, n.name))
        .collect();
    assert_eq!(
        nads,
        [
            "default/blue",
            "default/cluster",
            "default/macvlan-a",
            "default/static-c",
            "default/vxlan-d"
        ]
    );
    for nad in store.nads() {
        let config = nad.config.as_deref().unwrap_or_default();
        let conf: serde_json::Value = serde_json::from_str(config)
            .unwrap_or_else(|e| panic!("{} config is not JSON: {e}", nad.name));
        assert_eq!(conf["name"], nad.name.as_str(), "conf name matches the NAD");
    }
    let blue: serde_json::Value = serde_json::from_str(
        store
            .nad("default", "blue")
            .unwrap()
            .unwrap()
            .config
            .as_deref()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(blue["plugins"][1]["type"], "tuning", "blue is a conflist");

    let web = store.pod("default", "web").unwrap().unwrap();
    assert_eq!(
        web.annotations["k8s.v1.cni.cncf.io/networks"],
        "macvlan-a, vxlan-d@overlay0"
    );
    let db = store.pod("default", "db").unwrap().unwrap();
    let selections: serde_json::Value =
        serde_json::from_str(&db.annotations["k8s.v1.cni.cncf.io/networks"]).unwrap();
    assert_eq!(selections[2]["name"], "static-c");
    assert_eq!(selections[2]["ips"][0], "10.91.0.10/24");
    assert_eq!(store.pods().count(), 2);
}

#[test]
fn example_plexus_conf_is_json_pointing_at_the_cluster_nad() {
    let text = std::fs::read_to_string(format!("{EXAMPLES}/plexus.conf")).unwrap();
    let conf: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(conf["type"], "plexus");
    let cluster = conf["clusterNetwork"].as_str().unwrap();
    let (ns, name) = cluster.split_once('/').unwrap();
    let store = ManifestStore::open(Path::new(EXAMPLES)).unwrap();
    assert!(
        store.nad(ns, name).unwrap().is_some(),
        "{cluster} is in the examples"
    );
}
