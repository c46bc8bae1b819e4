//! The conductor's Kubernetes runtime driven through real PGMQ queues
//! (`#[sqlx::test]`) against a real kube-apiserver with the operator running
//! in-process (the test item 6).

// The operator's envtest harness (real kube-apiserver + etcd, the operator
// in-process, the kubelet's part), shared rather than copied.
#[allow(dead_code)]
#[path = "../../../operator/tests/it/envtest.rs"]
mod envtest;
mod lifecycle;
