-- 003_groups.sql - device groups (hubctl group add|remove|list).
--
-- device_groups: one row per (group, device). A device's groups ride in
--                the credential snapshot, so a change bumps devices_rev
--                and the hubs reload; a live session keeps the groups it
--                started with (they take effect on its next session).
--                Deleting a device removes its memberships.

CREATE TABLE device_groups (
	grp    TEXT NOT NULL,
	device TEXT NOT NULL,
	PRIMARY KEY (grp, device)
) WITHOUT ROWID;
CREATE INDEX device_groups_device ON device_groups(device);

CREATE TRIGGER device_groups_rev_insert AFTER INSERT ON device_groups
BEGIN
	UPDATE meta SET value = value + 1 WHERE key = 'devices_rev';
END;

CREATE TRIGGER device_groups_rev_delete AFTER DELETE ON device_groups
BEGIN
	UPDATE meta SET value = value + 1 WHERE key = 'devices_rev';
END;

CREATE TRIGGER devices_delete_groups AFTER DELETE ON devices
BEGIN
	DELETE FROM device_groups WHERE device = OLD.id;
END;
