//! The system's users and groups, read from `/etc/passwd` and `/etc/group`: the names that the
//! operator's messages give for an owner or the service user, and the uids of `exempt_users`.
//! The parsing is pure (the text of the file in, the answer out); only the two readers touch
//! the files.

/// The name of `id` in the text of a passwd or group file (`name:x:id:…`).
pub fn name_in(text: &str, id: u32) -> Option<String> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == id && !name.is_empty()).then(|| name.to_owned())
    })
}

/// The id of `name` in the text of a passwd or group file; a number is taken as the id itself.
pub fn id_in(text: &str, name: &str) -> Option<u32> {
    if let Ok(id) = name.parse::<u32>() {
        return Some(id);
    }
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next() != Some(name) {
            return None;
        }
        fields.nth(1)?.parse().ok()
    })
}

/// The user name of `uid` on this system.
pub fn user_name(uid: u32) -> Option<String> {
    name_in(&std::fs::read_to_string("/etc/passwd").ok()?, uid)
}

/// The uid of user `name` (or a number, taken as it is) on this system.
pub fn user_id(name: &str) -> Option<u32> {
    id_in(&std::fs::read_to_string("/etc/passwd").unwrap_or_default(), name)
}

/// The group name of `gid` on this system.
pub fn group_name(gid: u32) -> Option<String> {
    name_in(&std::fs::read_to_string("/etc/group").ok()?, gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_come_from_passwd_and_group_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nrocsync:x:998:997::/var/lib/rocsync:/usr/sbin/nologin\nbroken\n";
        assert_eq!(name_in(passwd, 998).as_deref(), Some("rocsync"));
        assert_eq!(name_in(passwd, 0).as_deref(), Some("root"));
        assert_eq!(name_in(passwd, 4242), None);
        assert_eq!(name_in("proxy:x:13:\n", 13).as_deref(), Some("proxy"));
        assert_eq!(id_in(passwd, "rocsync"), Some(998));
        assert_eq!(id_in(passwd, "13"), Some(13));
        assert_eq!(id_in(passwd, "nobody-here"), None);
    }
}
