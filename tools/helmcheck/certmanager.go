package helmcheck

import (
	"errors"
	"fmt"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// CertificateGroupVersion is cert-manager's API group and version the chart renders.
var CertificateGroupVersion = schema.GroupVersion{Group: "cert-manager.io", Version: "v1"}

// Certificate is cert-manager's cert-manager.io/v1 Certificate, transcribed by hand from its API
// reference (cert-manager v1.16-v1.19, which agree on every field below) because the
// github.com/cert-manager/cert-manager module brings a whole controller and its dependencies into
// tools/go.mod. It holds every top-level field of the spec except keystores, nameConstraints and
// otherNames, which the chart does not use: an object that uses them fails to decode, and this
// type must be extended then. Strict decoding makes a misspelled field or a wrong type fail, and
// validate checks the enumerations the API server's CRD schema would.
type Certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	// Spec is the desired certificate.
	Spec CertificateSpec `json:"spec"`
}

// CertificateSpec is the spec of a Certificate.
type CertificateSpec struct {
	// Subject is the X.509 subject beyond the common name.
	Subject *X509Subject `json:"subject,omitempty"`
	// LiteralSubject is an RFC 4514 subject, instead of Subject.
	LiteralSubject string `json:"literalSubject,omitempty"`
	// CommonName is the certificate's CN.
	CommonName string `json:"commonName,omitempty"`
	// Duration is the requested lifetime.
	Duration *metav1.Duration `json:"duration,omitempty"`
	// RenewBefore is how long before expiry the certificate is renewed.
	RenewBefore *metav1.Duration `json:"renewBefore,omitempty"`
	// RenewBeforePercentage is RenewBefore as a percentage of the lifetime.
	RenewBeforePercentage *int32 `json:"renewBeforePercentage,omitempty"`
	// DNSNames are the DNS subject alternative names.
	DNSNames []string `json:"dnsNames,omitempty"`
	// IPAddresses are the IP subject alternative names.
	IPAddresses []string `json:"ipAddresses,omitempty"`
	// URIs are the URI subject alternative names (the SPIFFE ID).
	URIs []string `json:"uris,omitempty"`
	// EmailAddresses are the email subject alternative names.
	EmailAddresses []string `json:"emailAddresses,omitempty"`
	// SecretName is the Secret the key pair and CA are written to.
	SecretName string `json:"secretName"`
	// SecretTemplate holds labels and annotations copied onto that Secret.
	SecretTemplate *CertificateSecretTemplate `json:"secretTemplate,omitempty"`
	// IssuerRef is the issuer that signs the certificate.
	IssuerRef IssuerReference `json:"issuerRef"`
	// IsCA marks the certificate as a CA.
	IsCA bool `json:"isCA,omitempty"`
	// Usages are the key usages and extended key usages requested.
	Usages []string `json:"usages,omitempty"`
	// PrivateKey sets how the private key is made.
	PrivateKey *CertificatePrivateKey `json:"privateKey,omitempty"`
	// SignatureAlgorithm overrides the signature algorithm.
	SignatureAlgorithm string `json:"signatureAlgorithm,omitempty"`
	// EncodeUsagesInRequest says whether usages are encoded in the CSR.
	EncodeUsagesInRequest *bool `json:"encodeUsagesInRequest,omitempty"`
	// RevisionHistoryLimit bounds the CertificateRequests kept.
	RevisionHistoryLimit *int32 `json:"revisionHistoryLimit,omitempty"`
	// AdditionalOutputFormats asks for the key pair in more formats.
	AdditionalOutputFormats []CertificateAdditionalOutputFormat `json:"additionalOutputFormats,omitempty"`
}

// X509Subject is the subject of a certificate.
type X509Subject struct {
	Organizations       []string `json:"organizations,omitempty"`
	Countries           []string `json:"countries,omitempty"`
	OrganizationalUnits []string `json:"organizationalUnits,omitempty"`
	Localities          []string `json:"localities,omitempty"`
	Provinces           []string `json:"provinces,omitempty"`
	StreetAddresses     []string `json:"streetAddresses,omitempty"`
	PostalCodes         []string `json:"postalCodes,omitempty"`
	SerialNumber        string   `json:"serialNumber,omitempty"`
}

// CertificateSecretTemplate holds metadata copied onto the certificate's Secret.
type CertificateSecretTemplate struct {
	Annotations map[string]string `json:"annotations,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// IssuerReference names an Issuer or ClusterIssuer.
type IssuerReference struct {
	Name  string `json:"name"`
	Kind  string `json:"kind,omitempty"`
	Group string `json:"group,omitempty"`
}

// CertificatePrivateKey sets the private key's algorithm, size, encoding and rotation.
type CertificatePrivateKey struct {
	RotationPolicy string `json:"rotationPolicy,omitempty"`
	Encoding       string `json:"encoding,omitempty"`
	Algorithm      string `json:"algorithm,omitempty"`
	Size           int    `json:"size,omitempty"`
}

// CertificateAdditionalOutputFormat is one more format of the key pair in the Secret.
type CertificateAdditionalOutputFormat struct {
	Type string `json:"type"`
}

// The enumerations of cert-manager's CRD schema for the fields above.
var (
	certificateUsages = []string{"signing", "digital signature", "content commitment", "key encipherment",
		"key agreement", "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
		"server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
		"ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"}
	privateKeyAlgorithms = []string{"", "RSA", "ECDSA", "Ed25519"}
	privateKeyEncodings  = []string{"", "PKCS1", "PKCS8"}
	rotationPolicies     = []string{"", "Never", "Always"}
	issuerKinds          = []string{"", "Issuer", "ClusterIssuer"}
)

// validate checks what cert-manager's CRD schema requires beyond the field types: the required
// fields and the enumerations.
func (c *Certificate) validate() error {
	var errs []error
	s := c.Spec
	if s.SecretName == "" {
		errs = append(errs, errors.New("spec.secretName is required"))
	}
	if s.IssuerRef.Name == "" {
		errs = append(errs, errors.New("spec.issuerRef.name is required"))
	}
	if s.IssuerRef.Group == "cert-manager.io" && !slices.Contains(issuerKinds, s.IssuerRef.Kind) {
		errs = append(errs, fmt.Errorf("spec.issuerRef.kind %q is not Issuer or ClusterIssuer", s.IssuerRef.Kind))
	}
	for _, u := range s.Usages {
		if !slices.Contains(certificateUsages, u) {
			errs = append(errs, fmt.Errorf("spec.usages: %q is not a cert-manager key usage", u))
		}
	}
	if k := s.PrivateKey; k != nil {
		if !slices.Contains(privateKeyAlgorithms, k.Algorithm) {
			errs = append(errs, fmt.Errorf("spec.privateKey.algorithm %q is not RSA, ECDSA or Ed25519", k.Algorithm))
		}
		if !slices.Contains(privateKeyEncodings, k.Encoding) {
			errs = append(errs, fmt.Errorf("spec.privateKey.encoding %q is not PKCS1 or PKCS8", k.Encoding))
		}
		if !slices.Contains(rotationPolicies, k.RotationPolicy) {
			errs = append(errs, fmt.Errorf("spec.privateKey.rotationPolicy %q is not Never or Always", k.RotationPolicy))
		}
	}
	return errors.Join(errs...)
}
