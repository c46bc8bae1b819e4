fn main() {
    let levels: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let mut s = "apiVersion: pgplane.io/v1\nkind: PostgresInstance\nmetadata:\n  name: a\nspec:\n  config:\n    l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n".to_owned();
    for i in 1..levels {
        s.push_str(&format!("    l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n", p = i - 1));
    }
    println!("{} bytes", s.len());
    let t = std::time::Instant::now();
    let r = gitops::parse_manifests(&[("a.yaml", s.as_bytes())], &gitops::ParseOptions { default_org: "acme".into() });
    println!("{:?} in {:?}", r.map(|_| ()).map_err(|e| e.0.len()), t.elapsed());
}
