package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"enclave/appservice"
)

// cmdAppService: appservice register prints a fresh registration file (new
// random tokens) for the operator to give to a bridge and list in
// app_services.config_files. Nothing is written or contacted.
func cmdAppService(args []string) error {
	if len(args) < 1 || args[0] != "register" {
		return errors.New("usage: enclave appservice register --id ID --sender LOCALPART [--url URL] [--users REGEX] [--aliases REGEX] > registration.yaml")
	}
	fl := flag.NewFlagSet("appservice register", flag.ExitOnError)
	id := fl.String("id", "", "the appservice's id")
	url := fl.String("url", "", "where the server pushes transactions (empty: none)")
	sender := fl.String("sender", "", "localpart of the appservice's own user")
	users := fl.String("users", "", "exclusive user namespace, a regular expression (e.g. '@xmpp_.*:example\\.org')")
	aliases := fl.String("aliases", "", "exclusive alias namespace, a regular expression")
	_ = fl.Parse(args[1:])
	if fl.NArg() > 0 {
		return fmt.Errorf("appservice register: unexpected argument %q", fl.Arg(0))
	}
	r, err := appservice.NewRegistration(*id, *url, *sender, *users, *aliases)
	if err != nil {
		return fmt.Errorf("appservice register: %w", err)
	}
	b, err := r.YAML()
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(b)
	return err
}
