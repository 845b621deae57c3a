//! mailshift's LDAP schema loads next to a directory's own `mailUserStatus`
//! (Sun/Oracle directories define it) and on its own, in both forms: the
//! slapd.conf `.schema` files under a running slapd, and the cn=config `.ldif`
//! files through slapadd/slaptest.
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::Slapd;

/// What a Sun-style directory has: `mailUserStatus` under the vendor's own OID
/// (not mailshift's), carried by the vendor's mail-user class. The test arc
/// 2.25.1 stands in for Sun's OIDs; only the name matters to the conflict.
const SUN_SCHEMA: &str = "\
attributetype ( 2.25.1.1 NAME 'mailUserStatus'
\tDESC 'Sun-style mail user status'
\tEQUALITY caseIgnoreMatch
\tSYNTAX 1.3.6.1.4.1.1466.115.121.1.15
\tSINGLE-VALUE )
objectclass ( 2.25.1.2 NAME 'inetMailUser'
\tSUP top AUXILIARY
\tMAY ( mailUserStatus ) )
";

/// The same in cn=config form.
const SUN_LDIF: &str = "\
dn: cn=sunmail,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: sunmail
olcAttributeTypes: ( 2.25.1.1 NAME 'mailUserStatus'
  DESC 'Sun-style mail user status' EQUALITY caseIgnoreMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
olcObjectClasses: ( 2.25.1.2 NAME 'inetMailUser' SUP top AUXILIARY
  MAY ( mailUserStatus ) )
";

fn ldap_dir() -> PathBuf {
    support::repo_dir().join("deploy/ldap")
}

fn stderr_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `slaptest -u` on a slapd.conf including the system schemas, then `schemas`.
fn slaptest_conf(dir: &Path, schemas: &[PathBuf]) -> Output {
    let mut conf = String::new();
    for s in ["core", "cosine", "inetorgperson", "misc"] {
        conf.push_str(&format!("include /etc/ldap/schema/{s}.schema\n"));
    }
    for s in schemas {
        conf.push_str(&format!("include {}\n", s.display()));
    }
    let path = dir.join("slaptest.conf");
    fs::write(&path, conf).expect("writing slaptest.conf");
    Command::new("slaptest")
        .arg("-u")
        .arg("-f")
        .arg(&path)
        .output()
        .expect("running slaptest")
}

#[test]
fn mailshift_schema_loads_where_mail_user_status_exists() {
    let tmp = support::shared_tempdir("mailshift-schema-");
    let sun = tmp.path().join("sun.schema");
    fs::write(&sun, SUN_SCHEMA).expect("writing sun.schema");

    // The test's Sun-style schema really conflicts with a second definition:
    // the old combined file (mailUserStatus + mailshift's attributes in one),
    // rebuilt here from the two files it was split into, is refused the way
    // admins saw it.
    let combined = tmp.path().join("combined.schema");
    let text = [
        fs::read_to_string(ldap_dir().join("mailuserstatus.schema")).expect("read"),
        fs::read_to_string(ldap_dir().join("mailshift.schema")).expect("read"),
    ]
    .concat();
    fs::write(&combined, text).expect("writing combined.schema");
    let out = slaptest_conf(tmp.path(), &[sun.clone(), combined]);
    assert!(!out.status.success(), "a duplicate was accepted");
    assert!(
        stderr_of(&out).contains("Inconsistent duplicate attributeType"),
        "{}",
        stderr_of(&out)
    );

    // Now as shipped: the directory's own schema, then only mailshift.schema.
    let ldap = Slapd::start_with_status_schema(false, &sun);
    ldap.add_user("alice", "alicepw", "old.example.org");
    ldap.set_attr("alice", "mailshiftMigrationState", "syncing");
    ldap.set_attr("alice", "mailshiftMigrationLease", "inst-1 1700000000");
    ldap.set_attr("alice", "mailshiftMigrationFrom", "old.example.org");
    ldap.set_attr("alice", "mailshiftMigrationTo", "new.example.org");
    ldap.set_attr("alice", "mailshiftMigrationUpdated", "20260101000000Z");
    ldap.set_attr("alice", "mailUserStatus", "hold");
    let out = ldap.search(
        "(&(mailshiftMigrationState=syncing)(mailUserStatus=hold))",
        &["mailshiftMigrationTo", "mailUserStatus"],
    );
    assert!(
        out.contains("mailshiftMigrationTo: new.example.org"),
        "{out}"
    );
    assert!(out.contains("mailUserStatus: hold"), "{out}");
    // An entry that carries the status through the directory's own class,
    // as Sun-provisioned users do, takes mailshift's attributes too.
    ldap.modify(&format!(
        "dn: uid=bob,{}\nchangetype: add\nobjectClass: inetOrgPerson\n\
         objectClass: inetMailUser\nobjectClass: mailshiftUser\nuid: bob\ncn: bob\nsn: bob\n\
         mailUserStatus: active\nmailshiftMigrationState: queued\n",
        ldap.base_dn()
    ));
    let out = ldap.search("(uid=bob)", &["mailshiftMigrationState"]);
    assert!(out.contains("mailshiftMigrationState: queued"), "{out}");
}

#[test]
fn both_schema_files_load_where_mail_user_status_is_missing() {
    let tmp = support::shared_tempdir("mailshift-schema-");
    let ours = ldap_dir().join("mailuserstatus.schema");
    let out = slaptest_conf(tmp.path(), &[ours, ldap_dir().join("mailshift.schema")]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    // mailshift.schema alone names an attribute nobody defined: refused, which
    // is why the README says to load mailuserstatus.schema first there.
    let out = slaptest_conf(tmp.path(), &[ldap_dir().join("mailshift.schema")]);
    assert!(!out.status.success(), "{}", stderr_of(&out));

    // The harness's default slapd is this case; the lab users carry both.
    let ldap = Slapd::start(false);
    ldap.add_user("carol", "carolpw", "old.example.org");
    ldap.set_attr("carol", "mailshiftMigrationState", "cutover");
    ldap.set_attr("carol", "mailUserStatus", "hold");
    let out = ldap.search(
        "(uid=carol)",
        &["mailshiftMigrationState", "mailUserStatus"],
    );
    assert!(out.contains("mailshiftMigrationState: cutover"), "{out}");
    assert!(out.contains("mailUserStatus: hold"), "{out}");
}

/// Builds a cn=config directory with slapadd from the system schemas, then
/// `status` (the LDIF texts defining mailUserStatus), then mailshift.ldif, and
/// an mdb database; returns slapadd's output.
fn slapadd_config(dir: &Path, status: &[String]) -> Output {
    let cfg = dir.join("slapd.d");
    let data = dir.join("data");
    let _ = fs::remove_dir_all(&cfg);
    let _ = fs::remove_dir_all(&data);
    fs::create_dir_all(&cfg).expect("mkdir slapd.d");
    fs::create_dir_all(&data).expect("mkdir data");
    let mut ldif = String::from(
        "dn: cn=config\nobjectClass: olcGlobal\ncn: config\n\n\
         dn: cn=module{0},cn=config\nobjectClass: olcModuleList\ncn: module{0}\n\
         olcModulePath: /usr/lib/ldap\nolcModuleLoad: back_mdb\n\n\
         dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n",
    );
    let mut schemas: Vec<String> = ["core", "cosine", "inetorgperson", "misc"]
        .iter()
        .map(|s| fs::read_to_string(format!("/etc/ldap/schema/{s}.ldif")).expect("system ldif"))
        .collect();
    schemas.extend_from_slice(status);
    schemas.push(fs::read_to_string(ldap_dir().join("mailshift.ldif")).expect("mailshift.ldif"));
    for s in schemas {
        // Comment lines are fine in LDIF, but a blank line must end each entry.
        ldif.push_str(s.trim_end());
        ldif.push_str("\n\n");
    }
    ldif.push_str(&format!(
        "dn: olcDatabase={{1}}mdb,cn=config\nobjectClass: olcDatabaseConfig\n\
         objectClass: olcMdbConfig\nolcDatabase: {{1}}mdb\nolcSuffix: {}\n\
         olcRootDN: {}\nolcDbDirectory: {}\n",
        support::ldap::SUFFIX,
        support::ldap::ADMIN_DN,
        data.display()
    ));
    let path = dir.join("config.ldif");
    fs::write(&path, ldif).expect("writing config.ldif");
    Command::new("slapadd")
        .arg("-n0")
        .arg("-F")
        .arg(&cfg)
        .arg("-l")
        .arg(&path)
        .output()
        .expect("running slapadd")
}

/// slapadd (which checks entries against the schema) of the lab's base and
/// one lab user into the mdb database of `dir`'s cn=config, then `slaptest`.
fn slapadd_user(dir: &Path) {
    let cfg = dir.join("slapd.d");
    let user = support::render(
        "user.ldif.in",
        &[
            ("LOGIN", "dave".to_string()),
            ("PASSWORD", "davepw".to_string()),
            ("MAILHOST", "old.example.org".to_string()),
        ],
    );
    // The user entry ends with its last attribute: mailshift's go after it.
    let entries = format!(
        "{}\n\n{}\nmailshiftMigrationState: syncing\nmailshiftMigrationTo: new.example.org\n",
        support::render("base.ldif.in", &[]).trim_end(),
        user.trim_end(),
    );
    let path = dir.join("entries.ldif");
    fs::write(&path, entries).expect("writing entries.ldif");
    let out = Command::new("slapadd")
        .arg("-n1")
        .arg("-F")
        .arg(&cfg)
        .arg("-l")
        .arg(&path)
        .output()
        .expect("running slapadd");
    assert!(out.status.success(), "slapadd entries: {}", stderr_of(&out));
    let out = Command::new("slaptest")
        .arg("-u")
        .arg("-F")
        .arg(&cfg)
        .output()
        .expect("running slaptest");
    assert!(out.status.success(), "slaptest: {}", stderr_of(&out));
}

#[test]
fn ldif_forms_load_into_cn_config() {
    let tmp = support::shared_tempdir("mailshift-schema-ldif-");
    let ours = fs::read_to_string(ldap_dir().join("mailuserstatus.ldif")).expect("read");

    // A directory without mailUserStatus: mailuserstatus.ldif, then mailshift.ldif.
    let out = slapadd_config(tmp.path(), std::slice::from_ref(&ours));
    assert!(out.status.success(), "{}", stderr_of(&out));
    slapadd_user(tmp.path());

    // A Sun-style directory: its own definition, then only mailshift.ldif.
    let out = slapadd_config(tmp.path(), &[SUN_LDIF.to_string()]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    slapadd_user(tmp.path());

    // And mailuserstatus.ldif on top of the Sun-style one is refused, as the
    // README warns.
    let out = slapadd_config(tmp.path(), &[SUN_LDIF.to_string(), ours]);
    assert!(!out.status.success(), "a duplicate was accepted");
    assert!(
        stderr_of(&out).contains("Inconsistent duplicate attributeType"),
        "{}",
        stderr_of(&out)
    );
}
