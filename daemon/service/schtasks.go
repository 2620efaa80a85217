package service

import (
	"context"
	"encoding/binary"
	"encoding/xml"
	"strings"
	"unicode/utf16"
)

// TaskXML is the Task Scheduler task that runs `exe daemon --managed` when
// user logs on (all users' logons when user is empty) and restarts it
// after a failure: every minute (the Task Scheduler's shortest interval),
// up to 999 times. The task has no time limit (the default stops a task
// after 3 days) and runs on battery. A task cannot set environment
// variables: it runs with the user's own environment, and the daemon
// learns its manager from --managed. The XML declares UTF-16, the
// encoding schtasks reads reliably; utf16File encodes it so.
func TaskXML(exe, user string) string {
	esc := func(s string) string {
		var b strings.Builder
		_ = xml.EscapeText(&b, []byte(s))
		return b.String()
	}
	userID := ""
	if user != "" {
		userID = "\n      <UserId>" + esc(user) + "</UserId>"
	}
	return `<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>Keeps the sbx daemon running. Written by sbx daemon --install; sbx daemon --uninstall removes it.</Description>
    <URI>\` + esc(TaskName) + `</URI>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>` + userID + `
    </LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">` + userID + `
      <LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <AllowHardTerminate>true</AllowHardTerminate>
    <StartWhenAvailable>true</StartWhenAvailable>
    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>
    <IdleSettings>
      <StopOnIdleEnd>false</StopOnIdleEnd>
      <RestartOnIdle>false</RestartOnIdle>
    </IdleSettings>
    <AllowStartOnDemand>true</AllowStartOnDemand>
    <Enabled>true</Enabled>
    <Hidden>false</Hidden>
    <RunOnlyIfIdle>false</RunOnlyIfIdle>
    <WakeToRun>false</WakeToRun>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <Priority>7</Priority>
    <RestartOnFailure>
      <Interval>PT1M</Interval>
      <Count>999</Count>
    </RestartOnFailure>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>` + esc(exe) + `</Command>
      <Arguments>` + esc(strings.Join(DaemonArgs, " ")) + `</Arguments>
    </Exec>
  </Actions>
</Task>
`
}

// utf16File is s as UTF-16LE with a byte-order mark and CRLF line ends,
// as Windows writes task XML.
func utf16File(s string) []byte {
	s = strings.ReplaceAll(s, "\n", "\r\n")
	units := utf16.Encode([]rune(s))
	b := make([]byte, 2, 2+2*len(units))
	binary.LittleEndian.PutUint16(b, 0xFEFF)
	for _, u := range units {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}

// installTask registers the task from the XML file (/F replaces an
// earlier one), then ends a running instance and runs the new one.
func (h Host) installTask(ctx context.Context, res *Result, rollback func()) error {
	if err := h.run(ctx, res, "schtasks", "/Create", "/TN", TaskName, "/XML", res.Path, "/F"); err != nil {
		rollback()
		return &UnavailableError{Manager: Schtasks, Err: err}
	}
	_ = h.run(ctx, res, "schtasks", "/End", "/TN", TaskName) // fails when it is not running
	return h.run(ctx, res, "schtasks", "/Run", "/TN", TaskName)
}
