//! The console's instance list with many instances (simulated runtime):
//! server time per page (first, middle, last, filtered, sorted) and the
//! bytes sent, next to the floor of the same request on a one-instance
//! organisation in the same run.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::stream::{self, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

pub async fn console_list(instances: usize, requests: usize) -> anyhow::Result<()> {
    println!("== console instance list with {instances} instances (SIMULATED runtime), {requests} page loads");
    let dir = scratch_dir()?;
    let plane = SimulatedPlane::start(dir.path()).await?;
    let client = plane.client.clone();
    let new = |name: String| api::CreateInstance {
        name,
        spec: domain::InstanceSpec::default(),
        data_plane: None,
        owner: None,
    };
    // The floor: the same page while the organisation has one instance.
    client.create_instance(&new("c-00000".into())).await?;
    let cookie = sign_in(&plane.listen, &plane.token).await?;
    let mut floor = Vec::new();
    for _ in 0..requests {
        floor.push(get(&plane.listen, "/instances", &cookie).await?.0);
    }
    floor.sort();
    let results: Vec<anyhow::Result<()>> = stream::iter(1..instances)
        .map(|i| {
            let client = client.clone();
            async move {
                client.create_instance(&new(format!("c-{i:05}"))).await?;
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    // Measured once the fleet is steady: every create reported.
    none_submitted(&client, Duration::from_secs(600)).await?;
    let pages = instances.div_ceil(50).max(1);
    // The pages the pager reaches: the first, the middle one by its "Next"
    // link, the last by "Last", a filter, a sort and its next page.
    let middle = next_link(
        &plane.listen,
        &format!("/instances?page={}", pages / 2),
        &cookie,
    )
    .await?;
    let older = next_link(&plane.listen, "/instances?sort=age&dir=desc", &cookie).await?;
    let paths = [
        "/instances".to_owned(),
        middle,
        "/instances?page=last".to_owned(),
        "/instances?q=c-0999&state=all".to_owned(),
        "/instances?sort=age&dir=desc".to_owned(),
        older,
    ];
    let mut times = Vec::new();
    let mut bytes = Vec::new();
    let mut per_path: Vec<Vec<Duration>> = vec![Vec::new(); paths.len()];
    for i in 0..requests {
        let (took, n) = get(&plane.listen, &paths[i % paths.len()], &cookie).await?;
        times.push(took);
        bytes.push(n);
        per_path[i % paths.len()].push(took);
    }
    for (path, mut t) in paths.iter().zip(per_path) {
        t.sort();
        println!(
            "page     {path}: median {}, max {}",
            ms(t[t.len() / 2]),
            ms(t[t.len() - 1])
        );
    }
    // A typed-in `?page=N` skips rows by offset: measured apart, as it is
    // not what the pager links to.
    let mut direct = Vec::new();
    for _ in 0..requests.div_ceil(10) {
        direct.push(
            get(
                &plane.listen,
                &format!("/instances?page={}", pages / 2 + 1),
                &cookie,
            )
            .await?
            .0,
        );
    }
    direct.sort();
    times.sort();
    bytes.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "list     {instances} instances, pages of 50: p50 {} p99 {} (goal ≤ 50 ms p99); {} to {} bytes per page",
        ms(pct(&times, 0.5)),
        ms(pct(&times, 0.99)),
        bytes[0],
        bytes[bytes.len() - 1]
    );
    println!(
        "direct   /instances?page={} (offset, typed in): p50 {} p99 {}",
        pages / 2 + 1,
        ms(pct(&direct, 0.5)),
        ms(pct(&direct, 0.99))
    );
    println!(
        "floor    1 instance: p50 {} p99 {}",
        ms(pct(&floor, 0.5)),
        ms(pct(&floor, 0.99))
    );
    let (rss, hwm) = plane.server.memory_kib()?;
    println!(
        "control-plane RSS {} MiB (peak {} MiB)",
        rss / 1024,
        hwm / 1024
    );
    plane.db.stop().await?;
    Ok(())
}

/// Signs in as a browser does; returns the session cookie (`name=value`).
async fn sign_in(listen: &str, token: &str) -> anyhow::Result<String> {
    let body = format!("token={token}");
    let request = format!(
        "POST /login HTTP/1.1\r\nHost: {listen}\r\nOrigin: http://{listen}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let response = exchange(listen, &request).await?;
    let head = String::from_utf8_lossy(&response);
    let cookie = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.trim().split(';').next().map(str::to_owned))?
        })
        .context("no session cookie after sign-in")?;
    Ok(cookie)
}

/// The page's "Next →" link.
async fn next_link(listen: &str, path: &str, cookie: &str) -> anyhow::Result<String> {
    let (_, response) = fetch(listen, path, cookie).await?;
    let response = String::from_utf8(response)?;
    let marker = "rel=\"next\" href=\"";
    let at = response
        .find(marker)
        .with_context(|| format!("no next link on {path}"))?;
    let rest = &response[at + marker.len()..];
    Ok(rest[..rest.find('"').context("unterminated link")?].replace("&amp;", "&"))
}

/// GET `path` with the cookie: the time to the whole answer, and its size.
async fn get(listen: &str, path: &str, cookie: &str) -> anyhow::Result<(Duration, usize)> {
    let (took, response) = fetch(listen, path, cookie).await?;
    Ok((took, response.len()))
}

/// GET `path` with the cookie: the time to the whole answer, and the answer
/// (a 200, or an error).
async fn fetch(listen: &str, path: &str, cookie: &str) -> anyhow::Result<(Duration, Vec<u8>)> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {listen}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    let t = Instant::now();
    let response = exchange(listen, &request).await?;
    let took = t.elapsed();
    if !response.starts_with(b"HTTP/1.1 200") {
        bail!(
            "GET {path}: {}",
            String::from_utf8_lossy(&response[..response.len().min(200)])
        );
    }
    Ok((took, response))
}

async fn exchange(listen: &str, request: &str) -> anyhow::Result<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(listen).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await?;
    Ok(out)
}
