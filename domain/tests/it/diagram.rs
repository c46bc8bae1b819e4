//! The state diagram in ARCHITECTURE.md is generated from the transition
//! table. Run with `PGPLANE_UPDATE_DOCS=1` to rewrite it.

use std::path::Path;

const BEGIN: &str =
    "<!-- BEGIN GENERATED STATE DIAGRAM (cargo test -p domain; PGPLANE_UPDATE_DOCS=1 rewrites) -->";
const END: &str = "<!-- END GENERATED STATE DIAGRAM -->";

#[test]
fn architecture_state_diagram_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md");
    let doc = std::fs::read_to_string(&path).expect("ARCHITECTURE.md exists");
    let generated = format!(
        "{BEGIN}\n```mermaid\n{}```\n{END}",
        domain::state::mermaid_diagram()
    );
    let start = doc
        .find(BEGIN)
        .expect("ARCHITECTURE.md has the BEGIN marker");
    let end = doc.find(END).expect("ARCHITECTURE.md has the END marker") + END.len();
    let current = &doc[start..end];
    if current != generated {
        if std::env::var_os("PGPLANE_UPDATE_DOCS").is_some() {
            let updated = format!("{}{}{}", &doc[..start], generated, &doc[end..]);
            std::fs::write(&path, updated).unwrap();
        } else {
            panic!("the state diagram in ARCHITECTURE.md is stale: run `PGPLANE_UPDATE_DOCS=1 cargo test -p domain --test it diagram`");
        }
    }
}
