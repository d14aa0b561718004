//! In-process IPAM (host-local, static); placeholder until the IPAM work is merged.
