//! operator's tests: builder snapshots, and the controller against a real
//! kube-apiserver + etcd (envtest style, nothing mocked; see `envtest`).

mod builders;
mod envtest;
mod leader;
mod lifecycle;
