//! install's decisions without touching the machine: its arguments, the configuration's
//! paths, where the console script and the configuration file are.

use super::*;

fn args(list: &[&str]) -> Result<Args, String> {
    let owned: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    match parse_args(&owned)? {
        Parsed::Run(a) => Ok(a),
        Parsed::Help => Err("help".into()),
    }
}

#[test]
fn install_takes_its_options_and_leaves_the_servers() {
    let a = args(&["main:app", "--dry-run", "--user=shop", "--unit", "shop.service", "--workers", "4", "-c", "f.toml", "--port=80"]).unwrap();
    assert!(a.dry_run);
    assert_eq!((a.user.as_str(), a.unit.as_str()), ("shop", "shop"));
    assert_eq!(a.config, Some(PathBuf::from("f.toml")));
    assert_eq!(a.server, ["main:app", "--workers", "4", "--port=80"]);
    let d = args(&["main:app"]).unwrap();
    assert_eq!((d.user.as_str(), d.unit.as_str(), d.group.as_deref()), ("ferrogate", "ferrogate", None));
    assert!(matches!(parse_args(&["--help".into()]), Ok(Parsed::Help)));
}

#[test]
fn bad_names_are_refused_with_what_is_allowed() {
    assert!(args(&["--unit", "../etc"]).unwrap_err().contains("--unit"));
    assert!(args(&["--unit", ""]).is_err());
    assert!(args(&["--user", "Shop"]).unwrap_err().contains("lowercase"));
    assert!(args(&["--user", "root"]).unwrap_err().contains("--user root"));
    assert!(args(&["--user"]).unwrap_err().contains("needs a value"));
    assert_eq!(args(&["--unit", "shop-2"]).unwrap().unit, "shop-2");
}

fn config(flags: &[&str]) -> Config {
    let mut argv = vec!["ferrogate".to_string(), "main:app".to_string()];
    argv.extend(flags.iter().map(|s| s.to_string()));
    let layer = crate::config::gather_without_app(argv, vec![("RUNTIME_DIRECTORY".into(), "/run/shop".into())], 1).unwrap();
    layer.into_config().unwrap()
}

#[test]
fn the_unit_may_write_where_the_configuration_writes_and_its_own_directories_need_nothing() {
    let c = config(&["--log-file", "/var/log/shop/error.log", "--access-log-file", "/srv/logs/access.log", "--pid", "run/shop.pid", "--uds", "/srv/sock/app.sock"]);
    let (dirs, warnings) = written_dirs(&c, Some(Path::new("/srv/certs")), "shop", Path::new("/srv/app"));
    assert_eq!(dirs, [PathBuf::from("/srv/app/run"), "/srv/certs".into(), "/srv/logs".into(), "/srv/sock".into()], "/var/log/shop and /run/shop are the unit's");
    assert!(warnings.is_empty());
}

#[test]
fn a_socket_in_tmp_is_private_to_the_service_and_said_so() {
    let c = config(&["--uds", "/tmp/app.sock"]);
    let (dirs, warnings) = written_dirs(&c, None, "shop", Path::new("/srv/app"));
    assert!(dirs.is_empty());
    assert!(warnings[0].contains("/run/shop/app.sock"), "{warnings:?}");
}

#[test]
fn the_console_script_is_found_from_argv0() {
    let dir = std::env::temp_dir().join(format!("fg-install-test-{}", std::process::id()));
    let bin = dir.join("venv/bin");
    let main = dir.join("venv/lib/python3.11/site-packages/ferrogate");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&main).unwrap();
    let script = bin.join("ferrogate");
    std::fs::write(&script, "#!/usr/bin/python3\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    assert_eq!(console_script(script.to_str().unwrap(), Path::new("/"), &[]).unwrap(), script);
    assert_eq!(console_script("venv/bin/ferrogate", &dir, &[]).unwrap(), script, "relative to the current directory");
    let path = [(OsString::from("PATH"), bin.clone().into_os_string())];
    assert_eq!(console_script("ferrogate", Path::new("/"), &path).unwrap(), script, "found on PATH");
    let module = main.join("__main__.py");
    assert_eq!(console_script(module.to_str().unwrap(), Path::new("/"), &[]).unwrap(), script, "python -m ferrogate");
    let err = console_script("/nowhere/ferrogate", Path::new("/"), &[]).unwrap_err();
    assert!(err.contains("console script"), "{err}");
    assert_eq!(interpreter(&script), Some(PathBuf::from("/usr/bin/python3")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_configuration_file_is_given_named_in_the_environment_or_found() {
    let dir = std::env::temp_dir().join(format!("fg-install-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(config_file(None, &dir, &[]).unwrap(), None);
    std::fs::write(dir.join("ferrogate.toml"), "").unwrap();
    std::fs::write(dir.join("other.toml"), "").unwrap();
    assert_eq!(config_file(None, &dir, &[]).unwrap(), Some(dir.join("ferrogate.toml")));
    assert_eq!(config_file(Some(Path::new("other.toml")), &dir, &[]).unwrap(), Some(dir.join("other.toml")));
    let env = [(OsString::from("FERROGATE_CONFIG"), OsString::from("other.toml"))];
    assert_eq!(config_file(None, &dir, &env).unwrap(), Some(dir.join("other.toml")));
    let err = config_file(Some(Path::new("missing.toml")), &dir, &[]).unwrap_err();
    assert_eq!(err, "--config missing.toml: no such file");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn home_directories_are_recognised_through_links() {
    assert!(under_home(Path::new("/home/ana/shop")));
    assert!(under_home(Path::new("/root/app")));
    assert!(!under_home(Path::new("/srv/shop-that-does-not-exist")));
}
