package test

import (
	"os"
	"testing"

	"github.com/sirupsen/logrus"
)

// TestMain quiets the servers' logs (set ENCLAVE_TEST_LOG to see them).
func TestMain(m *testing.M) {
	if os.Getenv("ENCLAVE_TEST_LOG") == "" {
		logrus.SetLevel(logrus.WarnLevel)
	}
	os.Exit(m.Run())
}
