# A pgplane instance managed by Terraform. See README.md for how to run it.

terraform {
  required_version = ">= 1.0"
  required_providers {
    pgplane = {
      source  = "registry.pgplane.io/pgplane/pgplane"
      version = "~> 0.1"
    }
  }
}

# endpoint and token come from PGPLANE_ENDPOINT / PGPLANE_TOKEN
# (`pgplane up` writes both to DATA_DIR/pgplane.env).
provider "pgplane" {}

resource "pgplane_instance" "orders" {
  name             = "orders"
  postgres_version = "15"
  extensions       = ["hstore", "pg_stat_statements"]
  config           = { work_mem = "16MB", max_connections = "150" }

  timeouts {
    create = "5m"
  }
}

# Every instance of the organisation that is Up, whoever manages it.
data "pgplane_instances" "up" {
  state      = "Up"
  depends_on = [pgplane_instance.orders]
}

output "uri" {
  value     = pgplane_instance.orders.connection_uri
  sensitive = true
}

# The same connection attribute by attribute: `terraform output -json pg_env`.
output "pg_env" {
  value = {
    PGHOST     = pgplane_instance.orders.host
    PGPORT     = pgplane_instance.orders.port
    PGDATABASE = pgplane_instance.orders.dbname
    PGUSER     = pgplane_instance.orders.user
    PGPASSWORD = pgplane_instance.orders.password
  }
  sensitive = true
}

output "running" {
  value = [for i in data.pgplane_instances.up.instances : i.name]
}
