//! `terraform-provider-pgplane`: started by Terraform, never by hand.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let config = provider::Config::parse();
    provider::hclog::init(&config.log_level());
    match provider::run(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terraform-provider-pgplane: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
