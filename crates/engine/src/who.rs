//! Who runs keycycle, and where: for the audit trail and the approval
//! rules.

/// The operating system's name for the user keycycle runs as: the entry of
/// the effective uid in the user database (`/etc/passwd`, the file the
/// approval rules read groups from too), else `uid N`. Never `$USER` or
/// `$LOGNAME`: anyone can set those, and the audit trail and the rule that
/// a requester never approves their own change depend on who this is.
pub fn user() -> String {
    if let Some(user) = crate::debug::user_override() {
        return user;
    }
    let uid = rustix::process::geteuid().as_raw();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    user_of(&passwd, uid).unwrap_or_else(|| format!("uid {uid}"))
}

/// The name of `uid` in a `passwd(5)` text.
fn user_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let name = fields.first().filter(|n| !n.is_empty())?;
        (fields.get(2)?.parse::<u32>().ok()? == uid).then(|| (*name).to_owned())
    })
}

/// The machine's name.
pub fn host() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::user_of;

    #[test]
    fn the_user_is_found_by_uid_not_by_name() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      # a comment\n\
                      ops:x:1000:1000::/home/ops:/bin/sh\n\
                      1000:x:1001:1001::/home/x:/bin/sh\n";
        assert_eq!(user_of(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_of(passwd, 1000).as_deref(), Some("ops"));
        assert_eq!(user_of(passwd, 1001).as_deref(), Some("1000"));
        assert_eq!(user_of(passwd, 42), None);
    }
}
