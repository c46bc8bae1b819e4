//! The provider's schemas, declared once and turned into tfplugin6 `Schema`
//! messages. Only protocol 6.0 features are used (plain attributes and
//! nested blocks), so Terraform 1.0 understands them.

use crate::tfplugin::tfplugin6 as pb;
use crate::value::Value;

pub const INSTANCE: &str = "pgplane_instance";
pub const INSTANCES: &str = "pgplane_instances";
pub const BACKUPS: &str = "pgplane_backups";
pub const EXTENSIONS: &str = "pgplane_extensions";
/// Version of the `pgplane_instance` state layout ([`crate::server`] upgrades older ones).
pub const INSTANCE_SCHEMA_VERSION: i64 = 0;

#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    String,
    Number,
    Bool,
    Set(Box<Type>),
    List(Box<Type>),
    Map(Box<Type>),
    Object(Vec<(&'static str, Type)>),
}

impl Type {
    /// cty's JSON type encoding, e.g. `["set","string"]`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Type::String => json!("string"),
            Type::Number => json!("number"),
            Type::Bool => json!("bool"),
            Type::Set(t) => json!(["set", t.to_json()]),
            Type::List(t) => json!(["list", t.to_json()]),
            Type::Map(t) => json!(["map", t.to_json()]),
            Type::Object(attrs) => {
                let m: serde_json::Map<String, serde_json::Value> = attrs
                    .iter()
                    .map(|(n, t)| ((*n).to_owned(), t.to_json()))
                    .collect();
                json!(["object", m])
            }
        }
    }

    /// Coerces a decoded value to this type: numbers given as strings
    /// become numbers, objects get every attribute (null when missing) and
    /// lose attributes the type does not have.
    pub fn conform(&self, v: Value) -> Value {
        match (self, v) {
            (_, Value::Null) => Value::Null,
            (_, Value::Unknown) => Value::Unknown,
            (Type::Number, Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .map(Value::Number)
                .unwrap_or(Value::String(s)),
            (Type::String, Value::Number(n)) => Value::String(format_number(n)),
            (Type::String, Value::Bool(b)) => Value::String(b.to_string()),
            (Type::Set(t) | Type::List(t), Value::List(items)) => {
                Value::List(items.into_iter().map(|i| t.conform(i)).collect())
            }
            (Type::Map(t), Value::Map(m)) => {
                Value::Map(m.into_iter().map(|(k, v)| (k, t.conform(v))).collect())
            }
            (Type::Object(attrs), Value::Map(mut m)) => Value::Map(
                attrs
                    .iter()
                    .map(|(n, t)| {
                        let v = m.remove(*n).unwrap_or(Value::Null);
                        ((*n).to_owned(), t.conform(v))
                    })
                    .collect(),
            ),
            (_, v) => v,
        }
    }
}

fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// One attribute of a block.
#[derive(Debug, Clone)]
pub struct Attribute {
    pub name: &'static str,
    pub ty: Type,
    pub description: &'static str,
    pub required: bool,
    pub optional: bool,
    pub computed: bool,
    pub sensitive: bool,
}

/// A nested block: `SINGLE` nesting (`timeouts { … }`), or `LIST` nesting
/// (`role { … }` repeated) when `list`.
#[derive(Debug, Clone)]
pub struct NestedBlock {
    pub name: &'static str,
    pub block: Block,
    pub list: bool,
}

#[derive(Debug, Clone)]
pub struct Block {
    pub description: &'static str,
    pub attributes: Vec<Attribute>,
    pub blocks: Vec<NestedBlock>,
}

impl Block {
    /// Errors for read-only (computed, not optional) attributes that the
    /// configuration sets: Terraform leaves this check to providers.
    pub fn read_only_set(&self, config: &Value) -> Vec<crate::tfplugin::tfplugin6::Diagnostic> {
        self.attributes
            .iter()
            .filter(|a| a.computed && !a.optional && !config.get(a.name).is_null())
            .map(|a| {
                crate::diag::error_at(
                    crate::diag::attr_path(a.name),
                    "Invalid configuration for read-only attribute",
                    format!(
                        "\"{}\" is set by pgplane and cannot be configured; remove it from the configuration.",
                        a.name
                    ),
                )
            })
            .collect()
    }

    /// The object type of the block's values.
    pub fn object_type(&self) -> Type {
        let mut attrs: Vec<(&'static str, Type)> = self
            .attributes
            .iter()
            .map(|a| (a.name, a.ty.clone()))
            .collect();
        attrs.extend(self.blocks.iter().map(|b| {
            let ty = b.block.object_type();
            (b.name, if b.list { Type::List(Box::new(ty)) } else { ty })
        }));
        Type::Object(attrs)
    }

    /// A value with exactly this block's attributes (see [`Type::conform`]).
    pub fn conform(&self, v: Value) -> Value {
        self.object_type().conform(v)
    }

    pub fn to_proto(&self, version: i64) -> pb::Schema {
        pb::Schema {
            version,
            block: Some(self.block_proto(version)),
        }
    }

    fn block_proto(&self, version: i64) -> pb::schema::Block {
        pb::schema::Block {
            version,
            attributes: self
                .attributes
                .iter()
                .map(|a| pb::schema::Attribute {
                    name: a.name.to_owned(),
                    r#type: a.ty.to_json().to_string().into_bytes(),
                    description: a.description.to_owned(),
                    required: a.required,
                    optional: a.optional,
                    computed: a.computed,
                    sensitive: a.sensitive,
                    description_kind: pb::StringKind::Markdown as i32,
                    ..Default::default()
                })
                .collect(),
            block_types: self
                .blocks
                .iter()
                .map(|b| pb::schema::NestedBlock {
                    type_name: b.name.to_owned(),
                    block: Some(b.block.block_proto(0)),
                    nesting: if b.list {
                        pb::schema::nested_block::NestingMode::List as i32
                    } else {
                        pb::schema::nested_block::NestingMode::Single as i32
                    },
                    min_items: 0,
                    max_items: 0,
                })
                .collect(),
            description: self.description.to_owned(),
            description_kind: pb::StringKind::Markdown as i32,
            ..Default::default()
        }
    }
}

fn attr(name: &'static str, ty: Type, description: &'static str) -> Attribute {
    Attribute {
        name,
        ty,
        description,
        required: false,
        optional: false,
        computed: false,
        sensitive: false,
    }
}

impl Attribute {
    fn required(mut self) -> Self {
        self.required = true;
        self
    }
    fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
    fn computed(mut self) -> Self {
        self.computed = true;
        self
    }
    fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }
}

fn set_of_strings() -> Type {
    Type::Set(Box::new(Type::String))
}

fn map_of_strings() -> Type {
    Type::Map(Box::new(Type::String))
}

pub fn provider() -> Block {
    Block {
        description: "Manages Postgres instances on a pgplane control plane.",
        attributes: vec![
            attr(
                "endpoint",
                Type::String,
                "URL of the pgplane control plane, e.g. `http://127.0.0.1:8080`. Defaults to `PGPLANE_ENDPOINT`.",
            )
            .optional(),
            attr(
                "token",
                Type::String,
                "API token (its organisation is the one the provider manages). Defaults to `PGPLANE_TOKEN`.",
            )
            .optional()
            .sensitive(),
        ],
        blocks: vec![],
    }
}

/// The computed attributes every view of an instance has.
fn observed_attributes() -> Vec<Attribute> {
    vec![
        attr("id", Type::String, "The instance's id (a UUID).").computed(),
        attr("org", Type::String, "The organisation the instance belongs to.").computed(),
        attr(
            "state",
            Type::String,
            "Lifecycle state reported by the control plane: `Up`, `Configuring`, `Restarting`, `Stopped`, `Error`, ….",
        )
        .computed(),
        attr("host", Type::String, "Host to connect to.").computed(),
        attr("port", Type::Number, "Port to connect to.").computed(),
        attr(
            "dbname",
            Type::String,
            "Database to connect to (libpq's `dbname`).",
        )
        .computed(),
        attr("user", Type::String, "Role to connect as.").computed(),
        attr("password", Type::String, "The role's password.")
            .computed()
            .sensitive(),
        attr(
            "connection_uri",
            Type::String,
            "`postgres://user:password@host:port/database`, password included: the primary when it was read.",
        )
        .computed()
        .sensitive(),
        attr(
            "read_write_uri",
            Type::String,
            "A URI listing every member that reaches the primary wherever it is (`target_session_attrs=read-write`), password included; `connection_uri` for one server.",
        )
        .computed()
        .sensitive(),
        attr(
            "read_only_uri",
            Type::String,
            "A URI listing every member that prefers a standby (`target_session_attrs=prefer-standby`), password included; `connection_uri` for one server.",
        )
        .computed()
        .sensitive(),
    ]
}

pub fn instance_resource() -> Block {
    let mut attributes = vec![
        attr(
            "name",
            Type::String,
            "Instance name: a DNS-1123 label (lower-case letters, digits and `-`, starting with a letter, at most 63 characters), unique in the organisation. Changing it replaces the instance.",
        )
        .required(),
        attr(
            "postgres_version",
            Type::String,
            "Postgres major version. Defaults to `15`. Changing it replaces the instance.",
        )
        .optional()
        .computed(),
        attr(
            "extensions",
            set_of_strings(),
            "Postgres extensions to create, in any order, each `name` or `name=version` (e.g. `hstore=1.8`; without a version, the default one is created and then left as it is). A changed version runs `ALTER EXTENSION … UPDATE TO`. Extensions that must be preloaded (e.g. `pg_cron`, `pg_stat_statements`) restart Postgres when added. An extension removed from the list stays installed. `data.pgplane_extensions` lists what a data plane offers.",
        )
        .optional(),
        attr(
            "config",
            map_of_strings(),
            "postgresql.conf parameters as strings, e.g. `{ work_mem = \"16MB\" }`. Values are compared in Postgres' units, so `16MB` and `16384kB` are the same. Parameters pgplane manages (`port`, `data_directory`, …) may not be set.",
        )
        .optional(),
        attr("cpu", Type::String, "CPU: cores (`1`, `0.5`) or millicores (`500m`). Defaults to `1`.")
            .optional()
            .computed(),
        attr("memory", Type::String, "Memory, e.g. `512Mi`, `2Gi`. Defaults to `1Gi`.")
            .optional()
            .computed(),
        attr("storage", Type::String, "Disk size, e.g. `10Gi`. Defaults to `10Gi`.")
            .optional()
            .computed(),
        attr(
            "replicas",
            Type::Number,
            "Servers: one primary and `replicas - 1` streaming standbys (1 to 5), which take over when the primary is gone. Defaults to `1`. Changed in place: standbys are added or removed without restarting the primary.",
        )
        .optional()
        .computed(),
        attr(
            "synchronous",
            Type::String,
            "`off`, `on`, or a number `n`: with `on`, a commit is acknowledged only once a standby also has it on disk, so a failover loses no acknowledged commit; with `n`, once `n` standbys have it (needs `replicas` above `n`). A commit waits while fewer standbys are connected. Defaults to `off`. Changed in place, with a reload.",
        )
        .optional()
        .computed(),
        attr(
            "superuser_access",
            Type::Bool,
            "Whether the instance's `postgres` role is a superuser. Defaults to `false`: the role owns the database (schemas, tables, functions, trusted extensions) but cannot run programs on the server or read its files. Even when `true`, the server runs as an OS user of its own that reaches nothing outside this instance.",
        )
        .optional(),
        attr(
            "backup_schedule",
            Type::String,
            "When full backups are taken: a five-field cron expression in UTC (`30 2 * * *`) or a nickname (`@daily`). Defaults to `0 0 * * *`. WAL is archived continuously regardless.",
        )
        .optional()
        .computed(),
        attr(
            "backup_retention",
            Type::String,
            "How many full backups are kept (`\"7\"`), or for how many days (`\"7d\"`, the default). A deleted instance's backups are kept this long too.",
        )
        .optional()
        .computed(),
        attr(
            "restore_from",
            Type::String,
            "Create the instance as a copy of another instance's data, restored from its backups (a branch); the source may have been deleted and is never touched. Changing it replaces the instance.",
        )
        .optional(),
        attr(
            "restore_at",
            Type::String,
            "With `restore_from`: the point in time to recover to (RFC 3339, e.g. `2026-12-01T10:00:00Z`); the latest when neither this nor `restore_lsn` is set. Changing it replaces the instance.",
        )
        .optional(),
        attr(
            "restore_lsn",
            Type::String,
            "With `restore_from`: the WAL position to recover to (`0/3000060`). Changing it replaces the instance.",
        )
        .optional(),
        attr(
            "stopped",
            Type::Bool,
            "Whether the instance is stopped. Defaults to `false`. `true` stops Postgres (the data stays), `false` starts it again; changing it updates the instance in place. A stop outside Terraform shows as a change in the next plan.",
        )
        .optional()
        .computed(),
        attr(
            "owner",
            Type::String,
            "Who manages the instance: `terraform` for instances this provider creates or imports.",
        )
        .computed(),
    ];
    attributes.extend(observed_attributes());
    Block {
        description:
            "A Postgres instance managed by pgplane. `terraform apply` returns when it is `Up`.",
        attributes,
        blocks: vec![
            NestedBlock {
                name: "timeouts",
                block: Block {
                    description:
                        "How long to wait for the instance. Durations such as `30s`, `5m`, `1h`.",
                    attributes: vec![
                        attr("create", Type::String, "Default `10m`.").optional(),
                        attr("update", Type::String, "Default `10m`.").optional(),
                        attr("delete", Type::String, "Default `10m`.").optional(),
                    ],
                    blocks: vec![],
                },
                list: false,
            },
            role_block(),
            database_block(),
        ],
    }
}

/// `role { … }`, repeated: roles declared inside the instance.
fn role_block() -> NestedBlock {
    NestedBlock {
        name: "role",
        list: true,
        block: Block {
            description: "A role inside the instance (repeat the block for more). Its password is generated by the data plane; read it with `pgplane instance credentials NAME --role ROLE`. Roles no block declares are left alone; `ensure = \"absent\"` drops one.",
            attributes: vec![
                attr("name", Type::String, "Role name: lower-case letters, digits and `_`; not `postgres`, `pgplane` or `pg_…`.").required(),
                attr("login", Type::Bool, "Whether it may log in. Defaults to `true`.").optional(),
                attr("inherit", Type::Bool, "Whether it uses the privileges of the roles it is a member of. Defaults to `true`.").optional(),
                attr("member_of", set_of_strings(), "Every role it is a member of: declared roles, `postgres`, or predefined roles that reach no server file or program (`pg_read_all_data`, `pg_monitor`, …). Memberships not listed are revoked.").optional(),
                attr("connection_limit", Type::Number, "Most concurrent connections; `-1` (the default) for no limit.").optional(),
                attr("ensure", Type::String, "`present` (the default) or `absent` (dropped; refused while objects depend on it).").optional(),
            ],
            blocks: vec![],
        },
    }
}

/// `database { … }`, repeated: databases declared inside the instance.
fn database_block() -> NestedBlock {
    NestedBlock {
        name: "database",
        list: true,
        block: Block {
            description: "A database inside the instance (repeat the block for more). Databases no block declares are left alone; `ensure = \"absent\"` drops one.",
            attributes: vec![
                attr("name", Type::String, "Database name: lower-case letters, digits and `_`.").required(),
                attr("owner", Type::String, "A role a `role` block declares, or `postgres` (the default).").optional(),
                attr("extensions", set_of_strings(), "Extensions created inside this database, each `name` or `name=version`.").optional(),
                attr("schemas", set_of_strings(), "Schemas created in this database, owned by its owner.").optional(),
                attr("ensure", Type::String, "`present` (the default) or `absent` (dropped; refused while sessions are connected).").optional(),
            ],
            blocks: vec![],
        },
    }
}

pub fn instance_data_source() -> Block {
    let mut attributes = vec![
        attr(
            "name",
            Type::String,
            "Name (or id) of the instance to read.",
        )
        .required(),
        attr("postgres_version", Type::String, "Postgres major version.").computed(),
        attr("extensions", set_of_strings(), "Declared extensions.").computed(),
        attr(
            "config",
            map_of_strings(),
            "Declared postgresql.conf parameters.",
        )
        .computed(),
        attr("cpu", Type::String, "Declared CPU.").computed(),
        attr("memory", Type::String, "Declared memory.").computed(),
        attr("storage", Type::String, "Declared disk size.").computed(),
        attr(
            "owner",
            Type::String,
            "Who manages the instance: `api`, `terraform` or `git:<source>`.",
        )
        .computed(),
    ];
    attributes.extend(observed_attributes());
    Block {
        description: "One instance of the organisation, by name.",
        attributes,
        blocks: vec![],
    }
}

/// The element type of `pgplane_instances.instances`.
pub fn instance_summary_type() -> Type {
    Type::Object(vec![
        ("id", Type::String),
        ("name", Type::String),
        ("org", Type::String),
        ("owner", Type::String),
        ("state", Type::String),
        ("postgres_version", Type::String),
        ("host", Type::String),
        ("port", Type::Number),
    ])
}

pub fn instances_data_source() -> Block {
    Block {
        description: "The organisation's instances, optionally only those in one state.",
        attributes: vec![
            attr(
                "state",
                Type::String,
                "Only instances in this state (`Up`, `Stopped`, `Error`, …).",
            )
            .optional(),
            attr(
                "instances",
                Type::List(Box::new(instance_summary_type())),
                "The instances, sorted by name: `id`, `name`, `org`, `owner`, `state`, `postgres_version`, `host`, `port`.",
            )
            .computed(),
        ],
        blocks: vec![],
    }
}

/// The element type of `pgplane_backups.backups`.
pub fn backup_type() -> Type {
    Type::Object(vec![
        ("id", Type::String),
        ("type", Type::String),
        ("started_at", Type::String),
        ("stopped_at", Type::String),
        ("start_lsn", Type::String),
        ("stop_lsn", Type::String),
        ("size_bytes", Type::Number),
        ("repository_bytes", Type::Number),
        ("status", Type::String),
    ])
}

pub fn backups_data_source() -> Block {
    Block {
        description: "An instance's backups and the window a restore (`restore_from`, `restore_at`) can reach. Works for deleted instances too.",
        attributes: vec![
            attr("instance", Type::String, "Name (or id) of the instance.").required(),
            attr(
                "backups",
                Type::List(Box::new(backup_type())),
                "Its backups, oldest first: `id`, `type`, `started_at`, `stopped_at` (RFC 3339), `start_lsn`, `stop_lsn`, `size_bytes`, `repository_bytes`, `status`.",
            )
            .computed(),
            attr(
                "restorable_from",
                Type::String,
                "The earliest point a restore can reach (the end of the first backup); null before the first backup.",
            )
            .computed(),
            attr(
                "restorable_until",
                Type::String,
                "The latest point a restore can reach for a deleted instance; null while it runs (then: up to now).",
            )
            .computed(),
        ],
        blocks: vec![],
    }
}

/// The element type of `pgplane_extensions.extensions`.
pub fn extension_type() -> Type {
    Type::Object(vec![
        ("name", Type::String),
        ("default_version", Type::String),
        ("versions", Type::List(Box::new(Type::String))),
        ("preload", Type::Bool),
        ("preload_library", Type::String),
        ("restart_required", Type::Bool),
        ("trusted", Type::Bool),
        ("requires", Type::List(Box::new(Type::String))),
        ("package", Type::String),
        ("comment", Type::String),
    ])
}

pub fn extensions_data_source() -> Block {
    Block {
        description: "The extensions a data plane can install, with their versions, whether they are preloaded (declaring one restarts Postgres), whether a database owner may create them, what they require and the package they come from.",
        attributes: vec![
            attr(
                "data_plane",
                Type::String,
                "The data plane; defaults to the control plane's default one.",
            )
            .optional()
            .computed(),
            attr(
                "extensions",
                Type::List(Box::new(extension_type())),
                "Sorted by name: `name`, `default_version`, `versions` (every version `pgplane_instance.extensions` may name as `name=version`), `preload`, `preload_library` (null unless preloaded), `restart_required` (declaring it restarts Postgres), `trusted`, `requires`, `package` (null when unknown), `comment`.",
            )
            .computed(),
        ],
        blocks: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conform_fills_and_trims_attributes() {
        let b = instance_resource();
        let v = b.conform(Value::object([
            ("name", Value::string("a")),
            ("port", Value::string("5432")),
            ("removed_attr", Value::Bool(true)),
        ]));
        assert_eq!(v.get("port"), &Value::Number(5432.0));
        let Value::Map(m) = &v else { panic!() };
        assert!(!m.contains_key("removed_attr"));
        assert!(m.contains_key("connection_uri") && m.contains_key("timeouts"));
    }

    #[test]
    fn types_encode_as_cty_json() {
        assert_eq!(
            Type::Set(Box::new(Type::String)).to_json().to_string(),
            r#"["set","string"]"#
        );
    }
}
