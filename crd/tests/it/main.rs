//! crd's tests: the committed CRD YAML is current, and the schema says what
//! the API server must enforce.

mod schema;
mod yaml;
