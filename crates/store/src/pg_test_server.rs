//! A throwaway PostgreSQL server for tests: the distribution's binaries,
//! a temporary data directory, 127.0.0.1 on a free port, unix sockets in
//! the same directory, and password (SCRAM) authentication so the tests
//! pass the password the way keycycle does. Run as root, the server runs
//! as the `postgres` user (PostgreSQL refuses to run as root).
//!
//! Missing binaries fail the test with how to install them; they are never
//! a reason to skip.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The superuser the tests connect as.
pub const USER: &str = "keycycle";
/// Its password.
pub const PASSWORD: &str = "keycycle-test-password";

/// A running server, stopped (`pg_ctl stop -m immediate`) and its data
/// removed when dropped.
#[derive(Debug)]
pub struct TestServer {
    bin: PathBuf,
    /// The temporary directory: the data directory and the sockets.
    dir: PathBuf,
    pub port: u16,
    owner: Option<(u32, u32)>,
    databases: AtomicU64,
}

/// Where the PostgreSQL server binaries are: `pg_config --bindir`, else
/// the newest `/usr/lib/postgresql/*/bin` that has `initdb`.
pub fn bin_dir() -> Result<PathBuf, String> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_initdb(&dir) {
            return Ok(dir);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_initdb(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "the PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed; the \
         PostgreSQL tests need them: install them with `apt-get install postgresql` (Debian, \
         Ubuntu), then run the tests again"
            .to_owned()
    })
}

/// The uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_user() -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres") && f.len() > 3)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .ok_or_else(|| {
            "tests run as root, and PostgreSQL refuses to run as root, but there is no \
             `postgres` user to run it as; `apt-get install postgresql` creates one"
                .to_owned()
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot find a free port on 127.0.0.1")
}

impl TestServer {
    /// Starts a new server. Panics with what to do if it cannot.
    pub fn start() -> TestServer {
        match TestServer::try_start() {
            Ok(server) => server,
            Err(e) => panic!("cannot start a PostgreSQL server for the tests: {e}"),
        }
    }

    /// One server for the whole test process, started on first use and
    /// stopped by a watcher when the process ends (statics are never
    /// dropped).
    pub fn shared() -> &'static TestServer {
        static SHARED: OnceLock<TestServer> = OnceLock::new();
        SHARED.get_or_init(TestServer::start)
    }

    /// A new server that also speaks TLS, with a certificate for
    /// 127.0.0.1 only (not `localhost`) signed by a CA made now; returns
    /// the server and the CA's PEM file.
    #[cfg(test)]
    pub fn start_tls() -> (TestServer, PathBuf) {
        match TestServer::try_start_with(true) {
            Ok(server) => {
                let ca = server.dir.join("ca.pem");
                (server, ca)
            }
            Err(e) => panic!("cannot start a PostgreSQL server for the tests: {e}"),
        }
    }

    fn try_start() -> Result<TestServer, String> {
        TestServer::try_start_with(false)
    }

    fn try_start_with(tls: bool) -> Result<TestServer, String> {
        let bin = bin_dir()?;
        let root = std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(1)
            == 0;
        let owner = if root { Some(postgres_user()?) } else { None };
        let dir = std::env::temp_dir().join(format!(
            "keycycle-pg-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PASSWORD).map_err(|e| e.to_string())?;
        let (tls_files, ssl_options) = tls_setup(&dir, tls)?;
        let mut owned = vec![dir.clone(), pwfile.clone()];
        owned.extend(tls_files);
        if let Some((uid, gid)) = owner {
            for p in &owned {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .map_err(|e| format!("cannot give {} to postgres: {e}", p.display()))?;
            }
        }
        let mut server = TestServer {
            bin,
            dir,
            port: 0,
            owner,
            databases: AtomicU64::new(0),
        };
        let data = server.dir.join("data");
        server.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                USER.as_ref(),
                "--auth=scram-sha-256".as_ref(),
                format!("--pwfile={}", pwfile.display()).as_ref(),
                "--no-sync".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
            ],
        )?;
        // A port found free may be taken before the server binds it: try
        // a few.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port();
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} \
                 -c max_connections=200 -c shared_buffers=16MB{ssl_options}",
                server.port,
                server.dir.display()
            );
            let log = server.dir.join("log");
            match server.run(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-o".as_ref(),
                    options.as_ref(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "start".as_ref(),
                ],
            ) {
                Ok(()) => {
                    server.watch();
                    return Ok(server);
                }
                Err(e) => {
                    last = format!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default())
                }
            }
        }
        Err(last)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd.current_dir(&self.dir).env_remove("PGPASSWORD");
        cmd
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Stops the server once this process is gone, however it ends: a
    /// shared server is never dropped, and a test that aborts drops
    /// nothing.
    fn watch(&self) {
        // SIGQUIT to the postmaster is `pg_ctl stop -m immediate`; pg_ctl
        // itself refuses to run as root, which this watcher may be.
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             pm=$(head -n 1 '{dir}/data/postmaster.pid' 2>/dev/null); \
             if [ -n \"$pm\" ]; then kill -QUIT \"$pm\"; \
             while kill -0 \"$pm\" 2>/dev/null; do sleep 0.2; done; fi; \
             rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.display(),
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
    }

    /// A URL for database `db` (no password: it goes apart).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{USER}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Creates a new, empty database and returns its name.
    pub fn create_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!(
            "t{}_{n}_{:06x}",
            std::process::id(),
            rand::random::<u32>() & 0xff_ffff
        );
        let out = self
            .command("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                &name,
            ])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("cannot run createdb");
        assert!(
            out.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        name
    }

    /// Every row of database `db`, as `pg_dump --data-only` writes them:
    /// for scanning what a store left there.
    pub fn dump(&self, db: &str) -> String {
        self.client("pg_dump", &["--data-only", db])
    }

    /// Runs SQL in database `db` with psql, for tests that set up what a
    /// store would not write.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.client(
            "psql",
            &["-d", db, "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql],
        )
        .trim()
        .to_owned()
    }

    /// What client `program` printed, connected to this server as
    /// [`USER`] with `args`; panics with its stderr when it fails.
    fn client(&self, program: &str, args: &[&str]) -> String {
        let out = self
            .command(program)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(args)
            .env("PGPASSWORD", PASSWORD)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self
            .command("pg_ctl")
            .args(["-D".as_ref(), data.as_os_str()])
            .args(["stop", "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The files and server options of TLS, when asked for.
#[cfg(test)]
fn tls_setup(dir: &Path, tls: bool) -> Result<(Vec<PathBuf>, String), String> {
    if !tls {
        return Ok((Vec::new(), String::new()));
    }
    let (cert, key) = write_tls_files(dir)?;
    let options = format!(
        " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        cert.display(),
        key.display()
    );
    Ok((vec![cert, key], options))
}

/// Outside the store's own tests there is no certificate maker (rcgen is
/// a dev-dependency), so no TLS server either.
#[cfg(not(test))]
fn tls_setup(_dir: &Path, tls: bool) -> Result<(Vec<PathBuf>, String), String> {
    if tls {
        return Err("TLS test servers are made by the store's own tests only".to_owned());
    }
    Ok((Vec::new(), String::new()))
}

/// Writes `ca.pem`, and `server.crt` (the leaf for 127.0.0.1 and the CA)
/// and `server.key` (0600), into `dir`; returns the last two.
#[cfg(test)]
fn write_tls_files(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use std::os::unix::fs::PermissionsExt;
    let failed = |e: rcgen::Error| format!("cannot make a certificate: {e}");
    let ca_key = KeyPair::generate().map_err(failed)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "keycycle test PostgreSQL CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(failed)?;
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().map_err(failed)?;
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).map_err(failed)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "keycycle test PostgreSQL");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(failed)?;
    let write = |name: &str, text: String, mode: u32| -> Result<PathBuf, String> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {name}: {e}"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot chmod {name}: {e}"))?;
        Ok(path)
    };
    write("ca.pem", ca_cert.pem(), 0o644)?;
    let cert = write(
        "server.crt",
        format!("{}{}", leaf_cert.pem(), ca_cert.pem()),
        0o644,
    )?;
    let key = write("server.key", leaf_key.serialize_pem(), 0o600)?;
    Ok((cert, key))
}
