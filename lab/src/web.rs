//! A real web server for the lab: Debian's `nginx`, serving mirrors' public trees on a loopback
//! port, as a mirror's web server does. It runs unprivileged (as the given account when the lab
//! is root), in the foreground, as a single process (`master_process off`), with its config,
//! pid file, logs and temp dirs inside its own directory, and is stopped by pid (when dropped,
//! or by [`Nginx::stop`] to play a dead web server).

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::{free_port, other, STARTUP_TIMEOUT};

pub const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx.
pub struct Nginx {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

/// One tree served at `http://127.0.0.1:<port>/<prefix>/`.
#[derive(Debug, Clone)]
pub struct Site {
    pub prefix: String,
    pub root: PathBuf,
}

impl Nginx {
    /// Starts nginx in `dir` (created) serving `sites`; with `owner` (uid, gid) it runs as that
    /// account, which must be able to read the trees.
    pub fn start(dir: &Path, sites: &[Site], owner: Option<(u32, u32)>) -> io::Result<Nginx> {
        if !Path::new(NGINX).exists() {
            return Err(other(format!("{NGINX} missing: install nginx")));
        }
        fs::create_dir_all(dir.join("tmp"))?;
        if let Some((uid, gid)) = owner {
            for d in [dir.to_path_buf(), dir.join("tmp")] {
                std::os::unix::fs::chown(&d, Some(uid), Some(gid))?;
            }
        }
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let conf = dir.join("nginx.conf");
            fs::write(&conf, config(dir, port, sites))?;
            let mut cmd = Command::new(NGINX);
            // -e: the error log before the config is read (else /var/log/nginx, not ours).
            cmd.arg("-p")
                .arg(dir)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some((uid, gid)) = owner {
                // std drops the supplementary groups when it sets the uid as root.
                cmd.uid(uid).gid(gid);
            }
            let mut child = cmd
                .spawn()
                .map_err(|e| other(format!("cannot start nginx: {e}")))?;
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            loop {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Ok(Nginx {
                        port,
                        dir: dir.to_path_buf(),
                        child: Some(child),
                    });
                }
                if let Some(status) = child.try_wait()? {
                    let log = fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                    last_error = format!("nginx exited with {status} on port {port}: {log}");
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = format!("nginx did not listen on port {port}");
                    break;
                }
                sleep(Duration::from_millis(20));
            }
        }
        Err(other(last_error))
    }

    /// `http://127.0.0.1:<port>/<prefix>/`.
    pub fn url(&self, prefix: &str) -> String {
        format!("http://127.0.0.1:{}/{prefix}/", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops nginx by its pid (SIGKILL: a web server that died) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The access log: one line per request served.
    pub fn access_log(&self) -> PathBuf {
        self.dir.join("access.log")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config(dir: &Path, port: u16, sites: &[Site]) -> String {
    let d = |name: &str| dir.join(name).display().to_string();
    let mut s = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {};\nerror_log {} info;\n\
         events {{ worker_connections 512; }}\n\
         http {{\n  access_log {};\n  client_body_temp_path {};\n  proxy_temp_path {};\n  \
         fastcgi_temp_path {};\n  uwsgi_temp_path {};\n  scgi_temp_path {};\n  \
         types {{ text/plain txt; application/xml xml; text/html html; }}\n  \
         default_type application/octet-stream;\n  server {{\n    listen 127.0.0.1:{port};\n",
        d("nginx.pid"),
        d("error.log"),
        d("access.log"),
        d("tmp/body"),
        d("tmp/proxy"),
        d("tmp/fastcgi"),
        d("tmp/uwsgi"),
        d("tmp/scgi"),
    );
    for site in sites {
        let _ = writeln!(
            s,
            "    location /{}/ {{ alias {}/; }}",
            site.prefix,
            site.root.display()
        );
    }
    s.push_str("  }\n}\n");
    s
}
