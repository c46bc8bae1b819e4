package main

// The apiserver mode: a real kube-apiserver and an embedded etcd in one
// process, on loopback only.
//
// It generates (once per data directory) a CA, a serving certificate for
// 127.0.0.1/localhost, a service-account signing key and a static admin
// token, starts etcd, then the API server, and — once /readyz answers — writes
// a kubeconfig to --kubeconfig (atomically, so its existence means "ready")
// and prints "ready" on stdout. Restarting it with the same --data-dir and
// --port keeps the data and the credentials.

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func apiserverMain(args []string) int {
	fs := flag.NewFlagSet("apiserver", flag.ExitOnError)
	dataDir := fs.String("data-dir", "", "directory for etcd data and generated credentials (required)")
	kubeconfig := fs.String("kubeconfig", "", "path to write the admin kubeconfig to once ready (required)")
	port := fs.Int("port", 0, "API server secure port on 127.0.0.1 (0: pick a free one)")
	etcdPort := fs.Int("etcd-port", 0, "etcd client port on 127.0.0.1 (0: pick a free one)")
	verbosity := fs.Int("v", 0, "kube-apiserver log verbosity")
	node := fs.Bool("node", false, "serve a cluster with a controller manager and nodes: the ServiceAccount admission plugin on (the controller manager creates the accounts it requires)")
	_ = fs.Parse(args)
	if *dataDir == "" || *kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "usage: pgplane-kube apiserver --data-dir DIR --kubeconfig PATH [--port N] [--etcd-port N] [--node]")
		return 2
	}
	if err := runAPIServer(*dataDir, *kubeconfig, *port, *etcdPort, *verbosity, *node); err != nil {
		fmt.Fprintf(os.Stderr, "pgplane-kube apiserver: %v\n", err)
		return 1
	}
	return 0
}

func runAPIServer(dataDir, kubeconfig string, port, etcdPort, verbosity int, node bool) error {
	dataDir, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	pki := filepath.Join(dataDir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	if port == 0 {
		if port, err = freePort(); err != nil {
			return err
		}
	}
	if etcdPort == 0 {
		if etcdPort, err = freePort(); err != nil {
			return err
		}
	}
	peerPort, err := freePort()
	if err != nil {
		return err
	}
	creds, err := ensureCredentials(pki)
	if err != nil {
		return fmt.Errorf("generating credentials in %s: %w", pki, err)
	}

	etcd, err := startEtcd(filepath.Join(dataDir, "etcd"), etcdPort, peerPort)
	if err != nil {
		return fmt.Errorf("starting embedded etcd: %w", err)
	}
	defer etcd.Close()

	admission := "--disable-admission-plugins=ServiceAccount"
	if node {
		admission = "--enable-admission-plugins=ServiceAccount"
	}
	cmd := app.NewAPIServerCommand()
	cmd.SetArgs([]string{
		"--advertise-address=127.0.0.1",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdPort),
		"--cert-dir=" + pki,
		"--tls-cert-file=" + creds.servingCert,
		"--tls-private-key-file=" + creds.servingKey,
		"--client-ca-file=" + creds.caCert,
		"--token-auth-file=" + creds.tokenFile,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + creds.saKey,
		"--service-account-signing-key-file=" + creds.saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		admission,
		"--enable-priority-and-fairness=false",
		"--endpoint-reconciler-type=none",
		"--profiling=false",
		fmt.Sprintf("--v=%d", verbosity),
	})

	go func() {
		if err := waitReady(port, creds); err != nil {
			fmt.Fprintf(os.Stderr, "pgplane-kube apiserver: %v\n", err)
			os.Exit(1)
		}
		if err := writeKubeconfig(kubeconfig, port, creds); err != nil {
			fmt.Fprintf(os.Stderr, "pgplane-kube apiserver: writing kubeconfig: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("ready https://127.0.0.1:%d kubeconfig=%s\n", port, kubeconfig)
	}()

	if code := cli.Run(cmd); code != 0 {
		return fmt.Errorf("kube-apiserver exited with code %d", code)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startEtcd(dir string, clientPort, peerPort int) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.Name = "pgplane-envtest"
	cfg.LogLevel = "error"
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = fmt.Sprintf("%s=%s", cfg.Name, peer.String())
	// Tests restart the process with the same data dir; etcd must not refuse
	// because the peer URL changed.
	cfg.StrictReconfigCheck = false
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("etcd not ready after 60s")
	}
}

type credentials struct {
	caCert, servingCert, servingKey, saKey, tokenFile string
	token                                             string
	caPEM                                             []byte
}

func ensureCredentials(pki string) (*credentials, error) {
	c := &credentials{
		caCert:      filepath.Join(pki, "ca.crt"),
		servingCert: filepath.Join(pki, "apiserver.crt"),
		servingKey:  filepath.Join(pki, "apiserver.key"),
		saKey:       filepath.Join(pki, "sa.key"),
		tokenFile:   filepath.Join(pki, "tokens.csv"),
	}
	tokenPath := filepath.Join(pki, "admin.token")
	if _, err := os.Stat(tokenPath); err != nil {
		if err := generateCredentials(c, tokenPath); err != nil {
			return nil, err
		}
	}
	tok, err := os.ReadFile(tokenPath)
	if err != nil {
		return nil, err
	}
	c.token = string(tok)
	if c.caPEM, err = os.ReadFile(c.caCert); err != nil {
		return nil, err
	}
	return c, nil
}

func generateCredentials(c *credentials, tokenPath string) error {
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pgplane-envtest-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	srvKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	tokenBytes := make([]byte, 24)
	if _, err := rand.Read(tokenBytes); err != nil {
		return err
	}
	token := hex.EncodeToString(tokenBytes)
	files := []struct {
		path string
		data []byte
	}{
		{c.caCert, pemBlock("CERTIFICATE", caDER)},
		{c.servingCert, pemBlock("CERTIFICATE", srvDER)},
		{c.servingKey, pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(srvKey))},
		{c.saKey, pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey))},
		{c.tokenFile, []byte(token + ",admin,admin-uid,system:masters\n")},
		{tokenPath, []byte(token)}, // written last: its presence marks a complete set
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}

func waitReady(port int, c *credentials) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caPEM)
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/readyz", port), nil)
		req.Header.Set("Authorization", "Bearer "+c.token)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("kube-apiserver /readyz not OK after 3 minutes")
}

func writeKubeconfig(path string, port int, c *credentials) error {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: https://127.0.0.1:%d
    certificate-authority-data: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: envtest
  context:
    cluster: envtest
    user: admin
    namespace: default
current-context: envtest
`, port, base64.StdEncoding.EncodeToString(c.caPEM), c.token)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(cfg), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
