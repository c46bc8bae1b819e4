//! `PostgresInstance` manifests: YAML files (one or many `---` documents
//! each) parsed, validated whole, and compiled into a [`DesiredSet`].
//!
//! A revision is validated as a whole: every error of every file is
//! collected, each with its file, line, column, field path and what is
//! allowed. One invalid manifest makes the whole revision invalid.

use std::collections::BTreeMap;
use std::fmt;

use domain::name::check_dns1123_label;
use domain::{validate_spec, InstanceName, InstanceSpec};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::de::{self, Issue, Issues};
use crate::yaml::{self, Node, NodeKind, Position};

pub const API_VERSION: &str = "pgplane.io/v1";
pub const KIND: &str = "PostgresInstance";

/// Whether a file name is a manifest (`*.yaml`, `*.yml`).
pub fn is_manifest_path(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

/// One problem in one manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestError {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, when known.
    pub column: Option<usize>,
    /// The field path, e.g. `spec.config.port`; empty for a file-level error.
    pub path: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:", self.file, self.line)?;
        if let Some(c) = self.column {
            write!(f, "{c}:")?;
        }
        if !self.path.is_empty() {
            write!(f, " {}:", self.path)?;
        }
        write!(f, " {}", self.message)
    }
}

/// Every problem of a revision, in file order then position order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    /// One `file:line:col: path: message` per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

/// One instance a revision declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredInstance {
    pub org: String,
    pub name: String,
    /// Normalised (`InstanceSpec::normalized`).
    pub spec: InstanceSpec,
    pub file: String,
    /// Where its document starts.
    pub line: usize,
}

/// Everything a valid revision declares, keyed by (org, name).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct DesiredSet {
    pub instances: BTreeMap<(String, String), DesiredInstance>,
}

impl DesiredSet {
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    pub fn get(&self, org: &str, name: &str) -> Option<&DesiredInstance> {
        self.instances.get(&(org.to_owned(), name.to_owned()))
    }
}

/// How manifests are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOptions {
    /// The organisation of manifests that do not name one (`metadata.org`).
    pub default_org: String,
}

/// A problem inside one file (the file name is added when the revision is
/// assembled, so a parsed file can be cached by its content alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub pos: Position,
    pub column_known: bool,
    pub path: String,
    pub message: String,
}

/// An instance declared in one file, before cross-file checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedInstance {
    pub org: Option<String>,
    pub name: String,
    pub spec: InstanceSpec,
    pub line: usize,
    /// Where `metadata.name` is written (for duplicate errors).
    pub name_pos: Position,
}

/// One file parsed and validated on its own. Depends only on the file's
/// bytes, so it can be cached by git blob id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedFile {
    pub instances: Vec<ParsedInstance>,
    pub errors: Vec<FileError>,
}

/// Parses and validates every file, then checks them together (duplicate
/// instances). `files` are (path, contents), in the order to report them.
pub fn parse_manifests<P: AsRef<str>, B: AsRef<[u8]>>(
    files: &[(P, B)],
    options: &ParseOptions,
) -> Result<DesiredSet, ManifestErrors> {
    let parsed: Vec<ParsedFile> = files.iter().map(|(_, b)| parse_file(b.as_ref())).collect();
    assemble(
        files.iter().zip(&parsed).map(|((p, _), f)| (p.as_ref(), f)),
        options,
    )
}

/// Combines parsed files into a desired set, or every error of every file.
pub fn assemble<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a ParsedFile)>,
    options: &ParseOptions,
) -> Result<DesiredSet, ManifestErrors> {
    let mut set = DesiredSet::default();
    let mut errors = Vec::new();
    for (file, parsed) in files {
        let mut file_errors: Vec<ManifestError> = parsed
            .errors
            .iter()
            .map(|e| ManifestError {
                file: file.to_owned(),
                line: e.pos.line,
                column: e.column_known.then_some(e.pos.column),
                path: e.path.clone(),
                message: e.message.clone(),
            })
            .collect();
        for inst in &parsed.instances {
            let org = inst
                .org
                .clone()
                .unwrap_or_else(|| options.default_org.clone());
            let key = (org.clone(), inst.name.clone());
            if let Some(first) = set.instances.get(&key) {
                file_errors.push(ManifestError {
                    file: file.to_owned(),
                    line: inst.name_pos.line,
                    column: Some(inst.name_pos.column),
                    path: "metadata.name".to_owned(),
                    message: format!(
                        "duplicate instance {org}/{}: already declared at {}:{}; each instance may be declared once",
                        inst.name, first.file, first.line
                    ),
                });
                continue;
            }
            set.instances.insert(
                key,
                DesiredInstance {
                    org,
                    name: inst.name.clone(),
                    spec: inst.spec.clone(),
                    file: file.to_owned(),
                    line: inst.line,
                },
            );
        }
        file_errors.sort_by_key(|e| (e.line, e.column));
        errors.extend(file_errors);
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(ManifestErrors(errors))
    }
}

/// Parses and validates one file on its own.
pub fn parse_file(bytes: &[u8]) -> ParsedFile {
    let mut out = ParsedFile::default();
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.strip_prefix('\u{feff}').unwrap_or(t),
        Err(e) => {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            out.errors.push(FileError {
                pos: Position { line, column: 1 },
                column_known: false,
                path: String::new(),
                message: "not UTF-8 text; manifests are UTF-8 YAML".to_owned(),
            });
            return out;
        }
    };
    let documents = match yaml::parse_documents(text) {
        Ok(d) => d,
        Err(e) => {
            out.errors.push(FileError {
                pos: e.pos,
                column_known: true,
                path: String::new(),
                message: format!("not valid YAML: {}", e.message),
            });
            return out;
        }
    };
    for doc in &documents {
        let Some(root) = &doc.root else { continue };
        let mut errors = Vec::new();
        if let Some(instance) = parse_document(root, &mut errors) {
            if errors.is_empty() {
                out.instances.push(instance);
            }
        }
        out.errors.extend(errors);
    }
    out
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // read only to report unknown top-level fields
struct TopLevel {
    api_version: Option<IgnoredAny>,
    kind: Option<IgnoredAny>,
    metadata: Option<IgnoredAny>,
    spec: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
    #[serde(default)]
    org: Option<String>,
}

fn error(errors: &mut Vec<FileError>, pos: Position, path: &str, message: String) {
    errors.push(FileError {
        pos,
        column_known: true,
        path: path.to_owned(),
        message,
    });
}

fn take_issues(issues: Issues, errors: &mut Vec<FileError>) {
    for Issue { path, pos, message } in issues.into_inner() {
        error(errors, pos, &path, message);
    }
}

fn push_de_error(errors: &mut Vec<FileError>, e: de::DeError, fallback: Position, path: &str) {
    let p = e.path.unwrap_or_else(|| path.to_owned());
    error(errors, e.pos.unwrap_or(fallback), &p, e.message);
}

/// One document: header checks, metadata, spec and its validation. Returns
/// the instance when the metadata could be read (errors may still exist).
fn parse_document(root: &Node, errors: &mut Vec<FileError>) -> Option<ParsedInstance> {
    if !matches!(root.kind, NodeKind::Mapping(_)) {
        error(
            errors,
            root.pos,
            "",
            format!(
                "expected a {KIND} manifest (a mapping with apiVersion, kind, metadata, spec), found {}",
                root.describe()
            ),
        );
        return None;
    }
    let issues = Issues::default();
    // Only to report unknown top-level fields; cannot fail otherwise.
    let _ = de::from_node::<TopLevel>(root, "", &issues);
    take_issues(issues, errors);

    check_header(root, "apiVersion", API_VERSION, errors);
    check_header(root, "kind", KIND, errors);
    let metadata = parse_metadata(root, errors);
    let spec = parse_spec(root, errors);
    let (name, org, name_pos) = metadata?;
    Some(ParsedInstance {
        org,
        name,
        spec: spec?,
        line: root.pos.line,
        name_pos,
    })
}

fn check_header(root: &Node, field: &str, expected: &str, errors: &mut Vec<FileError>) {
    match root.entry(field) {
        None => error(
            errors,
            root.pos,
            field,
            format!("missing; must be {expected:?}"),
        ),
        Some((key, value)) if value.as_str() != Some(expected) => {
            let found = match value.as_str() {
                Some(s) => format!("{s:?}"),
                None => value.describe().to_owned(),
            };
            error(
                errors,
                key.pos,
                field,
                format!("{found} is not supported; must be {expected:?}"),
            )
        }
        Some(_) => {}
    }
}

fn parse_metadata(
    root: &Node,
    errors: &mut Vec<FileError>,
) -> Option<(String, Option<String>, Position)> {
    let Some((key, node)) = root.entry("metadata") else {
        error(
            errors,
            root.pos,
            "metadata",
            "missing; must hold the instance's name (and optionally its org)".to_owned(),
        );
        return None;
    };
    let issues = Issues::default();
    let result = de::from_node::<Metadata>(node, "metadata", &issues);
    take_issues(issues, errors);
    let metadata = match result {
        Ok(m) => m,
        Err(e) => {
            push_de_error(errors, e, key.pos, "metadata");
            return None;
        }
    };
    let name_pos = node.locate("name");
    let mut ok = true;
    if let Err(e) = InstanceName::parse(&metadata.name) {
        error(errors, name_pos, "metadata.name", e.to_string());
        ok = false;
    }
    if let Some(org) = &metadata.org {
        if let Err(e) = check_dns1123_label(org) {
            error(errors, node.locate("org"), "metadata.org", e.to_string());
            ok = false;
        }
    }
    ok.then_some((metadata.name, metadata.org, name_pos))
}

fn parse_spec(root: &Node, errors: &mut Vec<FileError>) -> Option<InstanceSpec> {
    let Some((key, node)) = root.entry("spec") else {
        return Some(InstanceSpec::default());
    };
    let issues = Issues::default();
    let result = de::from_node::<InstanceSpec>(node, "spec", &issues);
    let unknown_fields = !issues.borrow().is_empty();
    take_issues(issues, errors);
    let spec = match result {
        Ok(spec) => spec,
        Err(e) => {
            // Serde stops at the first bad value: read each field on its
            // own to report every one of them, then validate the fields
            // that could be read.
            let before = errors.len();
            let mut readable = Vec::new();
            if let NodeKind::Mapping(entries) = &node.kind {
                for entry in entries {
                    let single = Node {
                        kind: NodeKind::Mapping(vec![entry.clone()]),
                        pos: node.pos,
                    };
                    let ignored = Issues::default();
                    match de::from_node::<InstanceSpec>(&single, "spec", &ignored) {
                        Ok(_) => readable.push(entry.clone()),
                        Err(e) => push_de_error(errors, e, key.pos, "spec"),
                    }
                }
            }
            if errors.len() == before {
                push_de_error(errors, e, key.pos, "spec");
            }
            let partial = Node {
                kind: NodeKind::Mapping(readable),
                pos: node.pos,
            };
            if let Ok(spec) = de::from_node::<InstanceSpec>(&partial, "spec", &Issues::default()) {
                validate(&spec, root, errors);
            }
            return None;
        }
    };
    if !validate(&spec, root, errors) {
        return None;
    }
    (!unknown_fields).then(|| spec.normalized())
}

/// `domain::validate_spec`, each error placed at its field's key.
fn validate(spec: &InstanceSpec, root: &Node, errors: &mut Vec<FileError>) -> bool {
    match validate_spec(spec, "spec") {
        Ok(()) => true,
        Err(invalid) => {
            for field in invalid.0 {
                error(errors, root.locate(&field.path), &field.path, field.message);
            }
            false
        }
    }
}
