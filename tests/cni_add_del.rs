//! The lifecycle through the real binary, real network namespaces and Debian's reference
//! plugins: ADD → CHECK → DEL → DEL for a pod with a cluster network and several secondary
//! networks, and the leak oracle after each.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;

/// A node with an uplink bridge (macvlan master) and NADs of every shape the tests use.
fn node_with_networks(w: &World) {
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    w.nad(
        "default",
        "macvlan-a",
        &w.macvlan_conf("macvlan-a", "upl0", "10.89.1.0/24"),
    );
    w.nad(
        "default",
        "blue",
        &json!({"cniVersion": "1.0.0", "name": "blue", "plugins": [
            {"type": "macvlan", "master": "upl0", "mode": "bridge",
             "ipam": {"type": "host-local", "subnet": "10.89.2.0/24",
                      "dataDir": w.ipam_dir.display().to_string()}},
            {"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}}
        ]}),
    );
    w.nad(
        "default",
        "static-c",
        &json!({"cniVersion": "1.0.0", "name": "static-c", "type": "macvlan", "master": "upl0",
                "capabilities": {"ips": true, "mac": true},
                "ipam": {"type": "static"}}),
    );
}

#[test]
fn add_check_del_del_with_cluster_and_secondary_networks() {
    enter_node_netns();
    let w = World::new();
    node_with_networks(&w);
    w.pod(
        "default",
        "web",
        r#"[{"name":"macvlan-a"},{"name":"macvlan-a"},{"name":"blue","interface":"data0"},
            {"name":"static-c","ips":["10.89.3.7/24"],"mac":"02:23:45:67:89:01"}]"#,
    );
    let conf = w.plexus_conf(
        &w.bridge_conf("cluster", "cni-t0", "10.88.0.0/24"),
        json!({}),
    );
    let pod = PodNs::new();

    let add = Call::new("ADD", "c-web", Some(&pod.path), &w)
        .pod("default", "web")
        .run_json(&conf);
    add.ok();
    let result = add.json();
    assert_eq!(result["cniVersion"], "1.1.0");
    // The cluster network's result, as Multus returns it.
    let ips: Vec<&str> = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap())
        .collect();
    assert_eq!(ips, ["10.88.0.2/24"]);

    assert_eq!(pod.links(), ["data0", "eth0", "lo", "net1", "net2", "net4"]);
    assert_eq!(pod.addrs("eth0"), ["10.88.0.2/24"]);
    assert_eq!(pod.addrs("net1"), ["10.89.1.2/24"]);
    assert_eq!(pod.addrs("net2"), ["10.89.1.3/24"]);
    assert_eq!(pod.addrs("data0"), ["10.89.2.2/24"]);
    assert_eq!(pod.addrs("net4"), ["10.89.3.7/24"]);
    // /sys shows the mounter's netns, so the MAC is read through netlink.
    let mac = pod.exec("ip -br link show net4");
    assert!(String::from_utf8_lossy(&mac.stdout).contains("02:23:45:67:89:01"));
    // The tuning plugin of the chain ran inside the pod.
    let arp = pod.exec("cat /proc/sys/net/core/somaxconn");
    assert_eq!(String::from_utf8_lossy(&arp.stdout).trim(), "512");
    assert_eq!(w.reservations().len(), 4);
    assert_eq!(
        w.journal_files().len(),
        1,
        "one entry while the pod lives (the lock is a byte of the shared `.locks`)"
    );

    Call::new("CHECK", "c-web", Some(&pod.path), &w)
        .pod("default", "web")
        .run_json(&conf)
        .ok();

    let del = Call::new("DEL", "c-web", Some(&pod.path), &w)
        .pod("default", "web")
        .run_json(&conf);
    del.ok();
    assert_eq!(del.stdout, "");
    w.assert_clean(Some(&pod));
    Call::new("DEL", "c-web", Some(&pod.path), &w)
        .pod("default", "web")
        .run_json(&conf)
        .ok();
    w.assert_clean(Some(&pod));
}

#[test]
fn merged_result_mode_reports_every_attachment_in_the_requested_version() {
    enter_node_netns();
    let w = World::new();
    node_with_networks(&w);
    w.pod("default", "m", "macvlan-a");
    let pod = PodNs::new();
    for version in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let mut conf = w.plexus_conf(
            &w.bridge_conf("cluster", "cni-t1", "10.88.1.0/24"),
            json!({"resultMode": "merged"}),
        );
        conf["cniVersion"] = json!(version);
        let call = Call::new("ADD", "c-merged", Some(&pod.path), &w).pod("default", "m");
        let r = call.run_json(&conf);
        r.ok();
        let v = r.json();
        assert_eq!(v["cniVersion"], version);
        let sandbox: Vec<&str> = v["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i.get("sandbox").is_some())
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(sandbox, ["eth0", "net1"], "{version}: {v}");
        // Every IP points at its own interface after renumbering.
        for ip in v["ips"].as_array().unwrap() {
            let idx = ip["interface"].as_u64().unwrap() as usize;
            let name = v["interfaces"][idx]["name"].as_str().unwrap();
            let want = if ip["address"].as_str().unwrap().starts_with("10.88.") {
                "eth0"
            } else {
                "net1"
            };
            assert_eq!(name, want, "{version}: {v}");
        }
        assert_eq!(
            v["ips"][0].get("version").is_some(),
            version < "1.0.0",
            "ips[].version exists only before 1.0.0"
        );
        call.with("DEL").run_json(&conf).ok();
        w.assert_clean(Some(&pod));
    }
}

#[test]
fn del_without_add_succeeds_and_prints_nothing() {
    enter_node_netns();
    let w = World::new();
    let conf = w.plexus_conf(
        &w.bridge_conf("cluster", "cni-t2", "10.88.2.0/24"),
        json!({}),
    );
    let pod = PodNs::new();
    let r = Call::new("DEL", "never-added", Some(&pod.path), &w).run_json(&conf);
    r.ok();
    assert_eq!(r.stdout, "");
    let mut no_netns = Call::new("DEL", "never-added", None, &w);
    no_netns.unset.push("CNI_NETNS".into());
    no_netns.run_json(&conf).ok();
    w.assert_clean(Some(&pod));
}

#[test]
fn del_after_the_netns_is_gone_releases_every_ip() {
    enter_node_netns();
    let w = World::new();
    node_with_networks(&w);
    w.pod("default", "gone", "macvlan-a, blue");
    let conf = w.plexus_conf(
        &w.bridge_conf("cluster", "cni-t3", "10.88.3.0/24"),
        json!({}),
    );
    let pod = PodNs::new();
    Call::new("ADD", "c-gone", Some(&pod.path), &w)
        .pod("default", "gone")
        .run_json(&conf)
        .ok();
    assert_eq!(w.reservations().len(), 3);
    // A reboot: the pod's namespace and its links vanish; the journal and IPAM files stay.
    let path = pod.destroy();
    // Deleting the node's links the way a reboot does.
    let _ = std::process::Command::new("sh")
        .args(["-c", "ip link del cni-t3"])
        .status();
    let del = Call::new("DEL", "c-gone", Some(&path), &w)
        .pod("default", "gone")
        .run_json(&conf);
    del.ok();
    w.assert_clean(None);
    // And again without CNI_NETNS at all.
    let mut again = Call::new("DEL", "c-gone", None, &w).pod("default", "gone");
    again.unset.push("CNI_NETNS".into());
    again.run_json(&conf).ok();
}

#[test]
fn duplicate_add_is_refused_before_any_side_effect() {
    enter_node_netns();
    let w = World::new();
    node_with_networks(&w);
    w.pod("default", "dup", "macvlan-a");
    let conf = w.plexus_conf(
        &w.bridge_conf("cluster", "cni-t4", "10.88.4.0/24"),
        json!({}),
    );
    let pod = PodNs::new();
    let call = Call::new("ADD", "c-dup", Some(&pod.path), &w).pod("default", "dup");
    call.run_json(&conf).ok();
    let before_res = w.reservations();
    let entry = std::fs::read(
        w.cni_dir.join(
            w.journal_files()
                .into_iter()
                .find(|f| f.ends_with(".json"))
                .unwrap(),
        ),
    )
    .unwrap();
    let again = call.run_json(&conf);
    let e = again.err(7);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("already has an attachment"),
        "{e}"
    );
    assert_eq!(
        w.reservations(),
        before_res,
        "the first ADD's IPs are untouched"
    );
    assert_eq!(pod.links(), ["eth0", "lo", "net1"]);
    let after = std::fs::read(
        w.cni_dir.join(
            w.journal_files()
                .into_iter()
                .find(|f| f.ends_with(".json"))
                .unwrap(),
        ),
    )
    .unwrap();
    assert_eq!(entry, after, "journal entry unchanged");
    call.with("DEL").run_json(&conf).ok();
    w.assert_clean(Some(&pod));
}

#[test]
fn check_reports_drift_and_unknown_containers() {
    enter_node_netns();
    let w = World::new();
    node_with_networks(&w);
    w.pod("default", "drift", "macvlan-a");
    let conf = w.plexus_conf(
        &w.bridge_conf("cluster", "cni-t5", "10.88.5.0/24"),
        json!({}),
    );
    let pod = PodNs::new();
    Call::new("CHECK", "c-unknown", Some(&pod.path), &w)
        .run_json(&conf)
        .err(3);

    let call = Call::new("ADD", "c-drift", Some(&pod.path), &w).pod("default", "drift");
    call.run_json(&conf).ok();
    call.with("CHECK").run_json(&conf).ok();
    pod.exec("ip link del net1");
    let drift = call.with("CHECK").run_json(&conf);
    let e = drift.err(100);
    assert!(
        e["msg"].as_str().unwrap().contains("default/macvlan-a"),
        "{e}"
    );
    call.with("DEL").run_json(&conf).ok();
    w.assert_clean(Some(&pod));
}

#[test]
fn check_skips_delegates_older_than_0_4_0() {
    enter_node_netns();
    let w = World::new();
    sh("ip link add upl0 type bridge && ip link set upl0 up");
    let mut old = w.macvlan_conf("old", "upl0", "10.89.9.0/24");
    old["cniVersion"] = json!("0.3.1");
    w.nad("default", "old", &old);
    w.pod("default", "legacy", "old");
    let conf = w.plexus_conf(
        &w.bridge_conf("cluster", "cni-t6", "10.88.6.0/24"),
        json!({}),
    );
    let pod = PodNs::new();
    let call = Call::new("ADD", "c-legacy", Some(&pod.path), &w).pod("default", "legacy");
    call.run_json(&conf).ok();
    // Drift on the 0.3.1 network goes unnoticed: it has no CHECK to ask.
    pod.exec("ip addr flush dev net1");
    call.with("CHECK").run_json(&conf).ok();
    call.with("DEL").run_json(&conf).ok();
    w.assert_clean(Some(&pod));
}

#[test]
fn gc_deletes_attachments_no_longer_valid_and_keeps_the_rest() {
    enter_node_netns();
    let w = World::new();
    node_with_networks(&w);
    w.pod("default", "a", "macvlan-a");
    w.pod("default", "b", "macvlan-a");
    let conf = w.plexus_conf(
        &w.bridge_conf("cluster", "cni-t7", "10.88.7.0/24"),
        json!({"gcGracePeriod": 0}),
    );
    let pod_a = PodNs::new();
    let pod_b = PodNs::new();
    Call::new("ADD", "c-a", Some(&pod_a.path), &w)
        .pod("default", "a")
        .run_json(&conf)
        .ok();
    Call::new("ADD", "c-b", Some(&pod_b.path), &w)
        .pod("default", "b")
        .run_json(&conf)
        .ok();
    assert_eq!(w.reservations().len(), 4);

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c-a", "ifname": "eth0"}]);
    let mut call = Call::new("GC", "", None, &w);
    call.unset = vec!["CNI_CONTAINERID".into(), "CNI_IFNAME".into()];
    call.run_json(&gc).ok();
    // B's IPs are released and its links gone; A is untouched. GC was not forwarded to the
    // 1.0.0 reference plugins (they would answer "unknown CNI_COMMAND").
    assert_eq!(w.reservations().len(), 2);
    assert_eq!(pod_b.links(), ["lo"]);
    assert_eq!(pod_a.links(), ["eth0", "lo", "net1"]);

    // A malformed list deletes nothing.
    let mut bad = conf.clone();
    bad["cni.dev/valid-attachments"] = json!("everything");
    let e = call.run_json(&bad).err(7);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("cni.dev/valid-attachments"),
        "{e}"
    );
    let mut missing = conf.clone();
    missing
        .as_object_mut()
        .unwrap()
        .remove("cni.dev/valid-attachments");
    let e = call.run_json(&missing).err(7);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("cni.dev/valid-attachments"),
        "{e}"
    );
    assert_eq!(w.reservations().len(), 2);

    Call::new("DEL", "c-a", Some(&pod_a.path), &w)
        .pod("default", "a")
        .run_json(&conf)
        .ok();
    w.assert_clean(Some(&pod_a));
}

#[test]
fn gc_grace_period_protects_young_attachments() {
    enter_node_netns();
    let w = World::new();
    let conf = w.plexus_conf(
        &w.bridge_conf("cluster", "cni-t8", "10.88.8.0/24"),
        json!({"gcGracePeriod": 3600}),
    );
    let pod = PodNs::new();
    Call::new("ADD", "c-young", Some(&pod.path), &w)
        .run_json(&conf)
        .ok();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let mut call = Call::new("GC", "", None, &w);
    call.unset = vec!["CNI_CONTAINERID".into(), "CNI_IFNAME".into()];
    call.run_json(&gc).ok();
    assert_eq!(
        w.reservations().len(),
        1,
        "an attachment younger than the grace period survives"
    );
    Call::new("DEL", "c-young", Some(&pod.path), &w)
        .run_json(&conf)
        .ok();
    w.assert_clean(Some(&pod));
}

#[test]
fn status_answers_for_plexus_and_its_delegates() {
    enter_node_netns();
    let w = World::new();
    let conf = w.plexus_conf(
        &w.bridge_conf("cluster", "cni-t9", "10.88.9.0/24"),
        json!({}),
    );
    let mut call = Call::new("STATUS", "", None, &w);
    call.unset = vec![
        "CNI_CONTAINERID".into(),
        "CNI_IFNAME".into(),
        "CNI_NETNS".into(),
    ];
    let r = call.run_json(&conf);
    r.ok();
    assert_eq!(r.stdout, "");

    let ready = w.tmp.path().join("ready");
    let mut gated = conf.clone();
    gated["readinessindicatorfile"] = json!(ready.display().to_string());
    call.run_json(&gated).err(50);
    std::fs::write(&ready, "").unwrap();
    call.run_json(&gated).ok();

    let mut nonet = conf.clone();
    nonet["delegates"] = json!([]);
    nonet["clusterNetwork"] = json!("does-not-exist");
    call.run_json(&nonet).err(50);
}

#[test]
fn version_lists_every_supported_version() {
    let w = World::new();
    let mut call = Call::new("VERSION", "", None, &w);
    call.unset = vec![
        "CNI_CONTAINERID".into(),
        "CNI_IFNAME".into(),
        "CNI_PATH".into(),
    ];
    let r = call.run(br#"{"cniVersion":"0.4.0"}"#);
    r.ok();
    let v = r.json();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(
        v["supportedVersions"],
        json!([
            "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"
        ])
    );
}

#[test]
fn auxiliary_chain_runs_on_the_cluster_result_and_is_undone() {
    enter_node_netns();
    let w = World::new();
    let log = w.tmp.path().join("aux.log");
    let seen = w.tmp.path().join("aux-stdin");
    // A chained plugin: records what it is asked, fails ADD while `fail` exists.
    let fail = w.tmp.path().join("fail");
    w.script(
        "auxrec",
        &format!(
            r#"echo "$CNI_COMMAND $CNI_IFNAME" >> {log}
if [ "$CNI_COMMAND" = ADD ]; then
  cat > {seen}
  if [ -e {fail} ]; then echo '{{"code":7,"msg":"aux refuses"}}'; exit 1; fi
  echo '{{"cniVersion":"1.0.0"}}'
fi"#,
            log = log.display(),
            seen = seen.display(),
            fail = fail.display()
        ),
    );
    let conf_dir = w.tmp.path().join("net.d");
    std::fs::create_dir_all(conf_dir.join("vendor-chain")).unwrap();
    std::fs::write(
        conf_dir.join("vendor-chain/10-aux.conf"),
        r#"{"cniVersion":"1.0.0","name":"aux","type":"auxrec"}"#,
    )
    .unwrap();
    let conf = w.plexus_conf(
        &w.bridge_conf("cluster", "cni-aux", "10.88.11.0/24"),
        json!({"auxiliaryCNIChainName": "vendor-chain", "confDir": conf_dir.display().to_string()}),
    );
    let pod = PodNs::new();
    let call = Call::new("ADD", "c-aux", Some(&pod.path), &w);
    call.run_json(&conf).ok();
    let got: serde_json::Value = serde_json::from_slice(&std::fs::read(&seen).unwrap()).unwrap();
    assert_eq!(got["name"], "vendor-chain");
    assert_eq!(
        got["prevResult"]["ips"][0]["address"], "10.88.11.2/24",
        "runs on the cluster result: {got}"
    );
    let journal = w.journal_entry();
    let names: Vec<&str> = journal["networkStatus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cluster"], "the chain is no network of its own");
    call.with("DEL").run_json(&conf).ok();
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "ADD eth0\nDEL eth0\n"
    );
    w.assert_clean(Some(&pod));

    // A failing auxiliary chain fails the ADD and undoes the cluster network too.
    std::fs::write(&fail, "").unwrap();
    let e = Call::new("ADD", "c-aux2", Some(&pod.path), &w)
        .run_json(&conf)
        .err(100);
    assert!(e["msg"].as_str().unwrap().contains("vendor-chain"), "{e}");
    w.assert_clean(Some(&pod));
}
