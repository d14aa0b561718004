//! The Kubernetes names Plexus reads and writes, in one place: the pod and NAD annotations of
//! the NPWG spec and Multus, and the `runtimeConfig` capability through which containerd and
//! CRI-O pass a pod's annotations to the plugin.

/// The networks a pod asks for (NPWG §4.1).
pub const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
/// Multus's per-pod replacement of the cluster network.
pub const DEFAULT_NETWORK: &str = "v1.multus-cni.io/default-network";
/// What the pod got, written by Plexus (NPWG §5).
pub const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";
/// A NAD's device-plugin resource: the pod's devices of it are handed to the delegate.
pub const RESOURCE_NAME: &str = "k8s.v1.cni.cncf.io/resourceName";
/// The capability under which containerd and CRI-O pass every pod annotation in
/// `runtimeConfig` to a plugin that declares it.
pub const POD_ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";
