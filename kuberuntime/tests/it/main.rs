//! The conductor's Kubernetes runtime driven through real PGMQ queues
//! (`#[sqlx::test]`) against a real kube-apiserver with the operator running
//! in-process (the test item 6).

mod envtest;
mod lifecycle;
