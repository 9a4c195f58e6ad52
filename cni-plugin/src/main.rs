//! `trireme`: the chained CNI plugin. Run by a container runtime with CNI_COMMAND set, or as
//! `trireme supervise ...` (started by the plugin itself) to keep a pod's enforcer running.

use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if std::env::var_os("CNI_COMMAND").is_none()
        && args.get(1).map(String::as_str) == Some("supervise")
    {
        std::process::exit(trireme_cni::supervisor::run(&args[1..]));
    }
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = trireme_cni::Error::io("cannot read the network configuration from stdin", e);
        emit_error(&err, trireme_cni::conf::CURRENT_VERSION);
    }
    match trireme_cni::commands::dispatch(&stdin, |k| std::env::var(k).ok()) {
        Ok(Some(out)) => {
            let mut o = std::io::stdout().lock();
            let _ = serde_json::to_writer(&mut o, &out);
            let _ = o.write_all(b"\n");
        }
        Ok(None) => {}
        Err(e) => emit_error(&e, &trireme_cni::commands::answer_version(&stdin)),
    }
}

fn emit_error(e: &trireme_cni::Error, version: &str) -> ! {
    let mut o = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut o, &e.to_json(version));
    let _ = o.write_all(b"\n");
    let _ = o.flush();
    eprintln!("trireme: {e}");
    std::process::exit(1);
}
