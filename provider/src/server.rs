//! The `tfplugin6.Provider` gRPC service: decodes each request's values,
//! hands them to the resource or data source, and encodes the answer.
//! RPCs not listed here answer UNIMPLEMENTED (the generated default), which
//! Terraform handles for the optional ones.

// `tonic::Status` is the error type of every RPC; boxing it in the helpers
// would only be unboxed again at the `?`.
#![allow(clippy::result_large_err)]

use std::sync::RwLock;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::diag::{self, attr_path, Diagnostics};
use crate::instance::{self, catalog::Catalogs, Ctx};
use crate::schema::{
    self, Block, BACKUPS, EXTENSIONS, INSTANCE, INSTANCES, INSTANCE_SCHEMA_VERSION,
};
use crate::tfplugin::tfplugin6 as pb;
use crate::value::Value;
use crate::{data_sources, tfplugin::tfplugin6::provider_server};

/// Endpoint and token from the environment, used when the provider block
/// leaves them out.
#[derive(Debug, Clone, Default)]
pub struct ProviderDefaults {
    pub endpoint: Option<String>,
    pub token: Option<String>,
}

pub struct Provider {
    defaults: ProviderDefaults,
    client: RwLock<Option<api::Client>>,
    /// Cancelled by `StopProvider` (and on shutdown): in-flight waits end.
    stop: CancellationToken,
    schemas: Schemas,
    /// Extension catalogs read for plans, kept for the process's lifetime.
    catalogs: Catalogs,
}

struct Schemas {
    provider: Block,
    instance: Block,
    instance_data: Block,
    instances_data: Block,
    backups_data: Block,
    extensions_data: Block,
}

impl Provider {
    pub fn new(defaults: ProviderDefaults, stop: CancellationToken) -> Provider {
        Provider {
            defaults,
            client: RwLock::new(None),
            stop,
            schemas: Schemas {
                provider: schema::provider(),
                instance: schema::instance_resource(),
                instance_data: schema::instance_data_source(),
                instances_data: schema::instances_data_source(),
                backups_data: schema::backups_data_source(),
                extensions_data: schema::extensions_data_source(),
            },
            catalogs: Catalogs::default(),
        }
    }

    fn ctx(&self) -> Result<Ctx, Diagnostics> {
        let client = self.client.read().expect("client lock").clone();
        match client {
            Some(client) => Ok(Ctx {
                client,
                stop: self.stop.clone(),
            }),
            None => Err(vec![diag::error(
                "The pgplane provider is not configured",
                "ConfigureProvider was not called before this operation.",
            )]),
        }
    }

    /// Errors for the extensions `config` newly declares that the data
    /// plane does not offer; none when the provider is not configured or
    /// the catalog cannot be read (apply then has the last word).
    async fn check_extensions(&self, prior: &Value, config: &Value) -> Diagnostics {
        let declared = instance::catalog::newly_declared(prior, config);
        if declared.is_empty() {
            return Vec::new();
        }
        let Ok(ctx) = self.ctx() else {
            return Vec::new();
        };
        // `pgplane_instance` has no data plane of its own: the control
        // plane's default one runs it.
        match self.catalogs.get(&ctx.client, None).await {
            Some(catalog) => instance::catalog::check(&declared, &catalog),
            None => Vec::new(),
        }
    }

    fn resource_block(&self, type_name: &str) -> Result<&Block, Status> {
        match type_name {
            INSTANCE => Ok(&self.schemas.instance),
            _ => Err(Status::invalid_argument(format!(
                "unknown resource type {type_name:?}"
            ))),
        }
    }

    fn data_block(&self, type_name: &str) -> Result<&Block, Status> {
        match type_name {
            INSTANCE => Ok(&self.schemas.instance_data),
            INSTANCES => Ok(&self.schemas.instances_data),
            BACKUPS => Ok(&self.schemas.backups_data),
            EXTENSIONS => Ok(&self.schemas.extensions_data),
            _ => Err(Status::invalid_argument(format!(
                "unknown data source {type_name:?}"
            ))),
        }
    }
}

/// Decodes a request value (msgpack, or JSON when msgpack is absent) into
/// the block's shape. A missing value is null.
fn decode(v: Option<&pb::DynamicValue>, block: &Block) -> Result<Value, Status> {
    let Some(v) = v else {
        return Ok(Value::Null);
    };
    let raw = if !v.msgpack.is_empty() {
        Value::from_msgpack(&v.msgpack)
    } else if !v.json.is_empty() {
        Value::from_json(&v.json)
    } else {
        return Ok(Value::Null);
    }
    .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(block.conform(raw))
}

fn encode(v: Value, block: &Block) -> Option<pb::DynamicValue> {
    Some(pb::DynamicValue {
        msgpack: block.conform(v).to_msgpack(),
        json: Vec::new(),
    })
}

#[tonic::async_trait]
impl provider_server::Provider for Provider {
    async fn get_metadata(
        &self,
        _r: Request<pb::get_metadata::Request>,
    ) -> Result<Response<pb::get_metadata::Response>, Status> {
        Ok(Response::new(pb::get_metadata::Response {
            server_capabilities: Some(capabilities()),
            resources: vec![pb::get_metadata::ResourceMetadata {
                type_name: INSTANCE.into(),
            }],
            data_sources: [INSTANCE, INSTANCES, BACKUPS]
                .map(|t| pb::get_metadata::DataSourceMetadata {
                    type_name: t.into(),
                })
                .to_vec(),
            ..Default::default()
        }))
    }

    async fn get_provider_schema(
        &self,
        _r: Request<pb::get_provider_schema::Request>,
    ) -> Result<Response<pb::get_provider_schema::Response>, Status> {
        let s = &self.schemas;
        Ok(Response::new(pb::get_provider_schema::Response {
            provider: Some(s.provider.to_proto(0)),
            resource_schemas: [(
                INSTANCE.to_owned(),
                s.instance.to_proto(INSTANCE_SCHEMA_VERSION),
            )]
            .into(),
            data_source_schemas: [
                (INSTANCE.to_owned(), s.instance_data.to_proto(0)),
                (INSTANCES.to_owned(), s.instances_data.to_proto(0)),
                (BACKUPS.to_owned(), s.backups_data.to_proto(0)),
                (EXTENSIONS.to_owned(), s.extensions_data.to_proto(0)),
            ]
            .into(),
            server_capabilities: Some(capabilities()),
            ..Default::default()
        }))
    }

    async fn validate_provider_config(
        &self,
        r: Request<pb::validate_provider_config::Request>,
    ) -> Result<Response<pb::validate_provider_config::Response>, Status> {
        let config = decode(r.get_ref().config.as_ref(), &self.schemas.provider)?;
        let mut diagnostics = Vec::new();
        if let Some(e) = config.get("endpoint").as_str() {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                diagnostics.push(diag::error_at(
                    attr_path("endpoint"),
                    "Invalid endpoint",
                    format!("{e:?} is not an http:// or https:// URL"),
                ));
            }
        }
        Ok(Response::new(pb::validate_provider_config::Response {
            diagnostics: diag::named(diagnostics),
        }))
    }

    async fn configure_provider(
        &self,
        r: Request<pb::configure_provider::Request>,
    ) -> Result<Response<pb::configure_provider::Response>, Status> {
        let config = decode(r.get_ref().config.as_ref(), &self.schemas.provider)?;
        let mut diagnostics = Vec::new();
        let mut setting = |name: &str, default: &Option<String>, env: &str| -> Option<String> {
            match config.get(name) {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Unknown => {
                    diagnostics.push(diag::error_at(
                        attr_path(name),
                        format!("Provider {name} is not known yet"),
                        "The provider's configuration depends on values known only after apply.",
                    ));
                    None
                }
                _ => match default {
                    Some(d) => Some(d.clone()),
                    None => {
                        diagnostics.push(diag::error_at(
                            attr_path(name),
                            format!("Missing pgplane {name}"),
                            format!("Set `{name}` in the provider block or the {env} environment variable (`pgplane up` writes both to pgplane.env)."),
                        ));
                        None
                    }
                },
            }
        };
        let endpoint = setting("endpoint", &self.defaults.endpoint, "PGPLANE_ENDPOINT");
        let token = setting("token", &self.defaults.token, "PGPLANE_TOKEN");
        if let (Some(endpoint), Some(token)) = (endpoint, token) {
            tracing::debug!(%endpoint, "configured");
            *self.client.write().expect("client lock") =
                Some(api::Client::new(&endpoint, &token).acting_as("terraform"));
        }
        Ok(Response::new(pb::configure_provider::Response {
            diagnostics,
        }))
    }

    async fn validate_resource_config(
        &self,
        r: Request<pb::validate_resource_config::Request>,
    ) -> Result<Response<pb::validate_resource_config::Response>, Status> {
        let r = r.get_ref();
        let block = self.resource_block(&r.type_name)?;
        let config = decode(r.config.as_ref(), block)?;
        let mut diagnostics = block.read_only_set(&config);
        diagnostics.extend(instance::validate(&config));
        Ok(Response::new(pb::validate_resource_config::Response {
            diagnostics: diag::named(diagnostics),
        }))
    }

    async fn validate_data_resource_config(
        &self,
        r: Request<pb::validate_data_resource_config::Request>,
    ) -> Result<Response<pb::validate_data_resource_config::Response>, Status> {
        let r = r.get_ref();
        let block = self.data_block(&r.type_name)?;
        let config = decode(r.config.as_ref(), block)?;
        let mut diagnostics = block.read_only_set(&config);
        if r.type_name == INSTANCES {
            diagnostics.extend(data_sources::validate_instances(&config));
        }
        Ok(Response::new(pb::validate_data_resource_config::Response {
            diagnostics: diag::named(diagnostics),
        }))
    }

    async fn upgrade_resource_state(
        &self,
        r: Request<pb::upgrade_resource_state::Request>,
    ) -> Result<Response<pb::upgrade_resource_state::Response>, Status> {
        let r = r.get_ref();
        let block = self.resource_block(&r.type_name)?;
        if r.version > INSTANCE_SCHEMA_VERSION {
            return Ok(Response::new(pb::upgrade_resource_state::Response {
                upgraded_state: None,
                diagnostics: vec![diag::error(
                    "State written by a newer provider",
                    format!(
                        "The state has schema version {}; this provider knows up to {INSTANCE_SCHEMA_VERSION}. Upgrade the provider.",
                        r.version
                    ),
                )],
            }));
        }
        let raw = r
            .raw_state
            .as_ref()
            .map(|s| s.json.as_slice())
            .unwrap_or_default();
        let value = if raw.is_empty() {
            Value::Null
        } else {
            Value::from_json(raw).map_err(|e| Status::invalid_argument(e.to_string()))?
        };
        Ok(Response::new(pb::upgrade_resource_state::Response {
            upgraded_state: encode(value, block),
            diagnostics: Vec::new(),
        }))
    }

    async fn read_resource(
        &self,
        r: Request<pb::read_resource::Request>,
    ) -> Result<Response<pb::read_resource::Response>, Status> {
        let r = r.into_inner();
        let block = self.resource_block(&r.type_name)?;
        let prior = decode(r.current_state.as_ref(), block)?;
        let (new_state, diagnostics) = match self.ctx() {
            Ok(ctx) => instance::read(&ctx, &prior).await,
            Err(d) => (prior, d),
        };
        Ok(Response::new(pb::read_resource::Response {
            new_state: encode(new_state, block),
            diagnostics,
            private: r.private,
            ..Default::default()
        }))
    }

    async fn plan_resource_change(
        &self,
        r: Request<pb::plan_resource_change::Request>,
    ) -> Result<Response<pb::plan_resource_change::Response>, Status> {
        let r = r.into_inner();
        let block = self.resource_block(&r.type_name)?;
        let prior = decode(r.prior_state.as_ref(), block)?;
        let proposed = decode(r.proposed_new_state.as_ref(), block)?;
        let config = decode(r.config.as_ref(), block)?;
        let mut plan = instance::plan(&prior, proposed, &config);
        if !plan.planned.is_null() && !diag::has_errors(&plan.diagnostics) {
            plan.diagnostics
                .extend(self.check_extensions(&prior, &config).await);
        }
        Ok(Response::new(pb::plan_resource_change::Response {
            planned_state: encode(plan.planned, block),
            requires_replace: plan.requires_replace,
            planned_private: plan.private,
            diagnostics: plan.diagnostics,
            ..Default::default()
        }))
    }

    async fn apply_resource_change(
        &self,
        r: Request<pb::apply_resource_change::Request>,
    ) -> Result<Response<pb::apply_resource_change::Response>, Status> {
        let r = r.into_inner();
        let block = self.resource_block(&r.type_name)?;
        let prior = decode(r.prior_state.as_ref(), block)?;
        let planned = decode(r.planned_state.as_ref(), block)?;
        let (new_state, diagnostics) = match self.ctx() {
            Ok(ctx) => instance::apply(&ctx, &prior, planned).await,
            Err(d) => (prior, d),
        };
        Ok(Response::new(pb::apply_resource_change::Response {
            new_state: encode(new_state, block),
            diagnostics,
            ..Default::default()
        }))
    }

    async fn import_resource_state(
        &self,
        r: Request<pb::import_resource_state::Request>,
    ) -> Result<Response<pb::import_resource_state::Response>, Status> {
        let r = r.into_inner();
        let block = self.resource_block(&r.type_name)?;
        let (state, diagnostics) = match self.ctx() {
            Ok(ctx) => instance::import(&ctx, &r.id).await,
            Err(d) => (Value::Null, d),
        };
        let imported_resources = if diag::has_errors(&diagnostics) || state.is_null() {
            Vec::new()
        } else {
            vec![pb::import_resource_state::ImportedResource {
                type_name: r.type_name.clone(),
                state: encode(state, block),
                ..Default::default()
            }]
        };
        Ok(Response::new(pb::import_resource_state::Response {
            imported_resources,
            diagnostics,
            ..Default::default()
        }))
    }

    async fn read_data_source(
        &self,
        r: Request<pb::read_data_source::Request>,
    ) -> Result<Response<pb::read_data_source::Response>, Status> {
        let r = r.into_inner();
        let block = self.data_block(&r.type_name)?;
        let config = decode(r.config.as_ref(), block)?;
        let (state, diagnostics) = match self.ctx() {
            Ok(ctx) => match r.type_name.as_str() {
                INSTANCES => data_sources::read_instances(&ctx, &config).await,
                BACKUPS => data_sources::read_backups(&ctx, &config).await,
                EXTENSIONS => data_sources::read_extensions(&ctx, &config).await,
                _ => data_sources::read_instance(&ctx, &config).await,
            },
            Err(d) => (Value::Null, d),
        };
        Ok(Response::new(pb::read_data_source::Response {
            state: encode(state, block),
            diagnostics,
            ..Default::default()
        }))
    }

    async fn stop_provider(
        &self,
        _r: Request<pb::stop_provider::Request>,
    ) -> Result<Response<pb::stop_provider::Response>, Status> {
        tracing::info!("StopProvider: cancelling in-flight operations");
        self.stop.cancel();
        Ok(Response::new(pb::stop_provider::Response {
            error: String::new(),
        }))
    }
}

fn capabilities() -> pb::ServerCapabilities {
    pb::ServerCapabilities {
        plan_destroy: false,
        get_provider_schema_optional: false,
        move_resource_state: false,
        generate_resource_config: false,
    }
}
