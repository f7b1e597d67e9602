// Package config reads and writes config.toml in GitLab Runner's layout:
// global keys, [session_server], [[runners]] with [runners.kubernetes] and
// [runners.cache]. Errors carry file:line and the key path; unknown keys
// are returned as warnings.
package config

import "time"

// Defaults, as GitLab Runner has them.
const (
	DefaultConcurrent         = 1
	DefaultCheckInterval      = 3  // seconds
	DefaultShutdownTimeout    = 30 // seconds
	DefaultRequestConcurrency = 1
	DefaultOutputLimit        = 4096 // KiB
	DefaultUnhealthyLimit     = 3
	DefaultUnhealthyInterval  = time.Hour
	DefaultMetricsPort        = "9252"
)

// Executor names accepted in runners[].executor.
const (
	ExecutorShell      = "shell"
	ExecutorKubernetes = "kubernetes"
)

// Config is the whole config.toml.
type Config struct {
	Concurrent       int               `toml:"concurrent"`
	CheckInterval    int               `toml:"check_interval"`
	LogLevel         string            `toml:"log_level,omitempty"`
	LogFormat        string            `toml:"log_format,omitempty"`
	ListenAddress    string            `toml:"listen_address,omitempty"`
	ShutdownTimeout  int               `toml:"shutdown_timeout"`
	ConnectionMaxAge *Duration         `toml:"connection_max_age,omitempty"`
	SentryDSN        string            `toml:"sentry_dsn,omitempty"`
	Labels           map[string]string `toml:"labels,omitempty"`
	SessionServer    *SessionServer    `toml:"session_server,omitempty"`
	Runners          []*Runner         `toml:"runners,omitempty"`
}

// SessionServer is [session_server] (interactive web terminal); parsed only.
type SessionServer struct {
	ListenAddress    string `toml:"listen_address,omitempty"`
	AdvertiseAddress string `toml:"advertise_address,omitempty"`
	SessionTimeout   int    `toml:"session_timeout,omitempty"`
}

// Runner is one [[runners]] entry.
type Runner struct {
	Name            string    `toml:"name"`
	URL             string    `toml:"url"`
	ID              int64     `toml:"id"`
	Token           string    `toml:"token"`
	TokenObtainedAt time.Time `toml:"token_obtained_at"`
	TokenExpiresAt  time.Time `toml:"token_expires_at"`
	TLSCAFile       string    `toml:"tls-ca-file,omitempty"`
	TLSCertFile     string    `toml:"tls-cert-file,omitempty"`
	TLSKeyFile      string    `toml:"tls-key-file,omitempty"`

	Executor            string `toml:"executor"`
	Limit               int    `toml:"limit,omitempty"`
	RequestConcurrency  int    `toml:"request_concurrency,omitempty"`
	StrictCheckInterval bool   `toml:"strict_check_interval,omitempty"`
	OutputLimit         int    `toml:"output_limit,omitempty"`
	// Caps of artifact and cache extraction (internal/archive): bytes in
	// all, and a ratio to the archive's size past a free amount; 0 keeps
	// the defaults (64 GiB, 200, 1 GiB).
	ExtractMaxSize                 int64             `toml:"extract_max_size,omitempty"`
	ExtractMaxRatio                int64             `toml:"extract_max_ratio,omitempty"`
	ExtractRatioFreeSize           int64             `toml:"extract_ratio_free_size,omitempty"`
	BuildsDir                      string            `toml:"builds_dir,omitempty"`
	CacheDir                       string            `toml:"cache_dir,omitempty"`
	CloneURL                       string            `toml:"clone_url,omitempty"`
	Environment                    []string          `toml:"environment,omitempty"`
	PreGetSourcesScript            string            `toml:"pre_get_sources_script,omitempty"`
	PostGetSourcesScript           string            `toml:"post_get_sources_script,omitempty"`
	PreBuildScript                 string            `toml:"pre_build_script,omitempty"`
	PostBuildScript                string            `toml:"post_build_script,omitempty"`
	Shell                          string            `toml:"shell,omitempty"`
	DebugTraceDisabled             bool              `toml:"debug_trace_disabled,omitempty"`
	UnhealthyRequestsLimit         int               `toml:"unhealthy_requests_limit,omitempty"`
	UnhealthyInterval              *Duration         `toml:"unhealthy_interval,omitempty"`
	JobStatusFinalUpdateRetryLimit int               `toml:"job_status_final_update_retry_limit,omitempty"`
	PrepareTimeout                 *Duration         `toml:"prepare_timeout,omitempty"`
	GetSourcesTimeout              *Duration         `toml:"get_sources_timeout,omitempty"`
	SafeDirectoryCheckout          *bool             `toml:"safe_directory_checkout,omitempty"`
	FeatureFlags                   map[string]bool   `toml:"feature_flags,omitempty"`
	Labels                         map[string]string `toml:"labels,omitempty"`
	CustomBuildDir                 *CustomBuildDir   `toml:"custom_build_dir,omitempty"`
	Cache                          *Cache            `toml:"cache,omitempty"`
	Kubernetes                     *Kubernetes       `toml:"kubernetes,omitempty"`
}

// CustomBuildDir is [runners.custom_build_dir].
type CustomBuildDir struct {
	Enabled *bool `toml:"enabled,omitempty"`
}

// Cache is [runners.cache]. Note GitLab Runner's CamelCase keys.
type Cache struct {
	Type                   string      `toml:"Type,omitempty"`
	Path                   string      `toml:"Path,omitempty"`
	Shared                 bool        `toml:"Shared,omitempty"`
	MaxUploadedArchiveSize int64       `toml:"MaxUploadedArchiveSize,omitempty" env:"CACHE_MAXIMUM_UPLOADED_ARCHIVE_SIZE"`
	S3                     *CacheS3    `toml:"s3,omitempty"`
	GCS                    *CacheGCS   `toml:"gcs,omitempty"`
	Azure                  *CacheAzure `toml:"azure,omitempty"`
}

// CacheS3 is [runners.cache.s3].
type CacheS3 struct {
	ServerAddress             string `toml:"ServerAddress,omitempty"`
	AccessKey                 string `toml:"AccessKey,omitempty"`
	SecretKey                 string `toml:"SecretKey,omitempty"`
	SessionToken              string `toml:"SessionToken,omitempty"`
	BucketName                string `toml:"BucketName,omitempty"`
	BucketLocation            string `toml:"BucketLocation,omitempty"`
	Insecure                  bool   `toml:"Insecure,omitempty"`
	AuthenticationType        string `toml:"AuthenticationType,omitempty"`
	ServerSideEncryption      string `toml:"ServerSideEncryption,omitempty"`
	ServerSideEncryptionKeyID string `toml:"ServerSideEncryptionKeyID,omitempty"`
	DualStack                 *bool  `toml:"DualStack,omitempty"`
	PathStyle                 *bool  `toml:"PathStyle,omitempty"`
	Accelerate                bool   `toml:"Accelerate,omitempty"`
	RoleARN                   string `toml:"RoleARN,omitempty"`
	UploadRoleARN             string `toml:"UploadRoleARN,omitempty"`
}

// CacheGCS is [runners.cache.gcs].
type CacheGCS struct {
	CredentialsFile string `toml:"CredentialsFile,omitempty" env:"GOOGLE_APPLICATION_CREDENTIALS"`
	AccessID        string `toml:"AccessID,omitempty"`
	PrivateKey      string `toml:"PrivateKey,omitempty"`
	BucketName      string `toml:"BucketName,omitempty"`
}

// CacheAzure is [runners.cache.azure].
type CacheAzure struct {
	AccountName   string `toml:"AccountName,omitempty"`
	AccountKey    string `toml:"AccountKey,omitempty"`
	ContainerName string `toml:"ContainerName,omitempty"`
	StorageDomain string `toml:"StorageDomain,omitempty"`
}

// Kubernetes is [runners.kubernetes]. Fields of kind string, Quantity,
// Pattern, number, bool, list or string map get a register flag
// --kubernetes-<key> and env KUBERNETES_<KEY> (see cmd/podrunner).
type Kubernetes struct {
	// Connection.
	Host                        string `toml:"host,omitempty"`
	Context                     string `toml:"context,omitempty"`
	CertFile                    string `toml:"cert_file,omitempty"`
	KeyFile                     string `toml:"key_file,omitempty"`
	CAFile                      string `toml:"ca_file,omitempty"`
	BearerToken                 string `toml:"bearer_token,omitempty"`
	BearerTokenOverwriteAllowed bool   `toml:"bearer_token_overwrite_allowed,omitempty"`

	// Placement.
	Namespace                       string            `toml:"namespace,omitempty"`
	NamespaceOverwriteAllowed       Pattern           `toml:"namespace_overwrite_allowed,omitempty"`
	NamespacePerJob                 bool              `toml:"namespace_per_job,omitempty"`
	ServiceAccount                  string            `toml:"service_account,omitempty"`
	ServiceAccountOverwriteAllowed  Pattern           `toml:"service_account_overwrite_allowed,omitempty"`
	AutomountServiceAccountToken    *bool             `toml:"automount_service_account_token,omitempty"`
	NodeSelector                    map[string]string `toml:"node_selector,omitempty"`
	NodeSelectorOverwriteAllowed    Pattern           `toml:"node_selector_overwrite_allowed,omitempty"`
	NodeTolerations                 map[string]string `toml:"node_tolerations,omitempty"`
	NodeTolerationsOverwriteAllowed Pattern           `toml:"node_tolerations_overwrite_allowed,omitempty"`
	Affinity                        *Affinity         `toml:"affinity,omitempty"`
	PriorityClassName               string            `toml:"priority_class_name,omitempty"`
	RuntimeClassName                string            `toml:"runtime_class_name,omitempty"`
	SchedulerName                   string            `toml:"scheduler_name,omitempty"`
	DNSPolicy                       string            `toml:"dns_policy,omitempty"`
	DNSConfig                       *DNSConfig        `toml:"dns_config,omitempty"`
	HostAliases                     []HostAlias       `toml:"host_aliases,omitempty"`
	PodSpec                         []PodSpecPatch    `toml:"pod_spec,omitempty"`

	// Images.
	Image                             string       `toml:"image,omitempty"`
	AllowedImages                     []string     `toml:"allowed_images,omitempty"`
	AllowedServices                   []string     `toml:"allowed_services,omitempty"`
	PullPolicy                        StringOrList `toml:"pull_policy,omitempty"`
	AllowedPullPolicies               []string     `toml:"allowed_pull_policies,omitempty"`
	ImagePullSecrets                  []string     `toml:"image_pull_secrets,omitempty"`
	UseServiceAccountImagePullSecrets bool         `toml:"use_service_account_image_pull_secrets,omitempty"`
	HelperImage                       string       `toml:"helper_image,omitempty"`
	HelperImageFlavor                 string       `toml:"helper_image_flavor,omitempty"`
	HelperImageAutosetArchAndOS       bool         `toml:"helper_image_autoset_arch_and_os,omitempty"`
	// HelperImageVolume (podrunner's own key) mounts helper_image as an
	// image volume instead of running a helper container that copies the
	// agent: Kubernetes 1.35+ (1.31+ with the ImageVolume feature gate)
	// and a runtime that supports it (containerd 2.1+, CRI-O 1.31+).
	HelperImageVolume bool `toml:"helper_image_volume,omitempty"`

	// Resources of the build container.
	CPULimit                                   Quantity `toml:"cpu_limit,omitempty"`
	CPULimitOverwriteMaxAllowed                Quantity `toml:"cpu_limit_overwrite_max_allowed,omitempty"`
	CPURequest                                 Quantity `toml:"cpu_request,omitempty"`
	CPURequestOverwriteMaxAllowed              Quantity `toml:"cpu_request_overwrite_max_allowed,omitempty"`
	MemoryLimit                                Quantity `toml:"memory_limit,omitempty"`
	MemoryLimitOverwriteMaxAllowed             Quantity `toml:"memory_limit_overwrite_max_allowed,omitempty"`
	MemoryRequest                              Quantity `toml:"memory_request,omitempty"`
	MemoryRequestOverwriteMaxAllowed           Quantity `toml:"memory_request_overwrite_max_allowed,omitempty"`
	EphemeralStorageLimit                      Quantity `toml:"ephemeral_storage_limit,omitempty"`
	EphemeralStorageLimitOverwriteMaxAllowed   Quantity `toml:"ephemeral_storage_limit_overwrite_max_allowed,omitempty"`
	EphemeralStorageRequest                    Quantity `toml:"ephemeral_storage_request,omitempty"`
	EphemeralStorageRequestOverwriteMaxAllowed Quantity `toml:"ephemeral_storage_request_overwrite_max_allowed,omitempty"`

	// Resources of the helper container.
	HelperCPULimit                                   Quantity `toml:"helper_cpu_limit,omitempty"`
	HelperCPULimitOverwriteMaxAllowed                Quantity `toml:"helper_cpu_limit_overwrite_max_allowed,omitempty"`
	HelperCPURequest                                 Quantity `toml:"helper_cpu_request,omitempty"`
	HelperCPURequestOverwriteMaxAllowed              Quantity `toml:"helper_cpu_request_overwrite_max_allowed,omitempty"`
	HelperMemoryLimit                                Quantity `toml:"helper_memory_limit,omitempty"`
	HelperMemoryLimitOverwriteMaxAllowed             Quantity `toml:"helper_memory_limit_overwrite_max_allowed,omitempty"`
	HelperMemoryRequest                              Quantity `toml:"helper_memory_request,omitempty"`
	HelperMemoryRequestOverwriteMaxAllowed           Quantity `toml:"helper_memory_request_overwrite_max_allowed,omitempty"`
	HelperEphemeralStorageLimit                      Quantity `toml:"helper_ephemeral_storage_limit,omitempty"`
	HelperEphemeralStorageLimitOverwriteMaxAllowed   Quantity `toml:"helper_ephemeral_storage_limit_overwrite_max_allowed,omitempty"`
	HelperEphemeralStorageRequest                    Quantity `toml:"helper_ephemeral_storage_request,omitempty"`
	HelperEphemeralStorageRequestOverwriteMaxAllowed Quantity `toml:"helper_ephemeral_storage_request_overwrite_max_allowed,omitempty"`

	// Resources of service containers.
	ServiceCPULimit                                   Quantity `toml:"service_cpu_limit,omitempty"`
	ServiceCPULimitOverwriteMaxAllowed                Quantity `toml:"service_cpu_limit_overwrite_max_allowed,omitempty"`
	ServiceCPURequest                                 Quantity `toml:"service_cpu_request,omitempty"`
	ServiceCPURequestOverwriteMaxAllowed              Quantity `toml:"service_cpu_request_overwrite_max_allowed,omitempty"`
	ServiceMemoryLimit                                Quantity `toml:"service_memory_limit,omitempty"`
	ServiceMemoryLimitOverwriteMaxAllowed             Quantity `toml:"service_memory_limit_overwrite_max_allowed,omitempty"`
	ServiceMemoryRequest                              Quantity `toml:"service_memory_request,omitempty"`
	ServiceMemoryRequestOverwriteMaxAllowed           Quantity `toml:"service_memory_request_overwrite_max_allowed,omitempty"`
	ServiceEphemeralStorageLimit                      Quantity `toml:"service_ephemeral_storage_limit,omitempty"`
	ServiceEphemeralStorageLimitOverwriteMaxAllowed   Quantity `toml:"service_ephemeral_storage_limit_overwrite_max_allowed,omitempty"`
	ServiceEphemeralStorageRequest                    Quantity `toml:"service_ephemeral_storage_request,omitempty"`
	ServiceEphemeralStorageRequestOverwriteMaxAllowed Quantity `toml:"service_ephemeral_storage_request_overwrite_max_allowed,omitempty"`

	// Pod-level resources.
	PodCPULimit                         Quantity `toml:"pod_cpu_limit,omitempty"`
	PodCPULimitOverwriteMaxAllowed      Quantity `toml:"pod_cpu_limit_overwrite_max_allowed,omitempty"`
	PodCPURequest                       Quantity `toml:"pod_cpu_request,omitempty"`
	PodCPURequestOverwriteMaxAllowed    Quantity `toml:"pod_cpu_request_overwrite_max_allowed,omitempty"`
	PodMemoryLimit                      Quantity `toml:"pod_memory_limit,omitempty"`
	PodMemoryLimitOverwriteMaxAllowed   Quantity `toml:"pod_memory_limit_overwrite_max_allowed,omitempty"`
	PodMemoryRequest                    Quantity `toml:"pod_memory_request,omitempty"`
	PodMemoryRequestOverwriteMaxAllowed Quantity `toml:"pod_memory_request_overwrite_max_allowed,omitempty"`

	// Security.
	Privileged                              *bool                     `toml:"privileged,omitempty"`
	AllowPrivilegeEscalation                *bool                     `toml:"allow_privilege_escalation,omitempty"`
	CapAdd                                  []string                  `toml:"cap_add,omitempty"`
	CapDrop                                 []string                  `toml:"cap_drop,omitempty"`
	AllowedUsers                            []string                  `toml:"allowed_users,omitempty"`
	AllowedGroups                           []string                  `toml:"allowed_groups,omitempty"`
	PodSecurityContext                      *PodSecurityContext       `toml:"pod_security_context,omitempty"`
	BuildContainerSecurityContext           *ContainerSecurityContext `toml:"build_container_security_context,omitempty"`
	HelperContainerSecurityContext          *ContainerSecurityContext `toml:"helper_container_security_context,omitempty"`
	ServiceContainerSecurityContext         *ContainerSecurityContext `toml:"service_container_security_context,omitempty"`
	InitPermissionsContainerSecurityContext *ContainerSecurityContext `toml:"init_permissions_container_security_context,omitempty"`

	// Metadata.
	PodLabels                      map[string]string `toml:"pod_labels,omitempty"`
	PodLabelsOverwriteAllowed      Pattern           `toml:"pod_labels_overwrite_allowed,omitempty"`
	PodAnnotations                 map[string]string `toml:"pod_annotations,omitempty"`
	PodAnnotationsOverwriteAllowed Pattern           `toml:"pod_annotations_overwrite_allowed,omitempty"`

	// Lifecycle and timing.
	PollInterval int `toml:"poll_interval,omitempty"`
	PollTimeout  int `toml:"poll_timeout,omitempty"`
	// Warm pods (podrunner's own keys; docs/kubernetes-executor.md).
	WarmPods                             int                 `toml:"warm_pods,omitempty"`
	WarmPodsIdleTimeout                  int                 `toml:"warm_pods_idle_timeout,omitempty"`
	WarmPodsRefillPerMinute              int                 `toml:"warm_pods_refill_per_minute,omitempty"`
	TerminationGracePeriodSeconds        *int64              `toml:"terminationGracePeriodSeconds,omitempty" env:"KUBERNETES_TERMINATIONGRACEPERIODSECONDS"` // deprecated upstream name
	PodTerminationGracePeriodSeconds     *int64              `toml:"pod_termination_grace_period_seconds,omitempty"`
	CleanupGracePeriodSeconds            *int64              `toml:"cleanup_grace_period_seconds,omitempty"`
	CleanupResourcesTimeout              *Duration           `toml:"cleanup_resources_timeout,omitempty"`
	ResourceAvailabilityCheckMaxAttempts int                 `toml:"resource_availability_check_max_attempts,omitempty"`
	RetryLimit                           int                 `toml:"retry_limit,omitempty"`
	RetryBackoffMax                      int                 `toml:"retry_backoff_max,omitempty"`
	RetryLimits                          map[string]int      `toml:"retry_limits,omitempty"`
	ContainerLifecycle                   *ContainerLifecycle `toml:"container_lifecycle,omitempty"`
	PrintPodWarningEvents                *bool               `toml:"print_pod_warning_events,omitempty"`
	LogsBaseDir                          string              `toml:"logs_base_dir,omitempty"`
	ScriptsBaseDir                       string              `toml:"scripts_base_dir,omitempty"`

	// Storage and services.
	Volumes  *Volumes  `toml:"volumes,omitempty"`
	Services []Service `toml:"services,omitempty"`
}

// Affinity mirrors the Kubernetes affinity in snake_case keys.
type Affinity struct {
	NodeAffinity    *NodeAffinity `toml:"node_affinity,omitempty"`
	PodAffinity     *PodAffinity  `toml:"pod_affinity,omitempty"`
	PodAntiAffinity *PodAffinity  `toml:"pod_anti_affinity,omitempty"`
}

// NodeAffinity is affinity.node_affinity.
type NodeAffinity struct {
	RequiredDuringSchedulingIgnoredDuringExecution  *NodeSelector             `toml:"required_during_scheduling_ignored_during_execution,omitempty"`
	PreferredDuringSchedulingIgnoredDuringExecution []PreferredSchedulingTerm `toml:"preferred_during_scheduling_ignored_during_execution,omitempty"`
}

// NodeSelector is a list of node selector terms (ORed).
type NodeSelector struct {
	NodeSelectorTerms []NodeSelectorTerm `toml:"node_selector_terms,omitempty"`
}

// NodeSelectorTerm is ANDed requirements.
type NodeSelectorTerm struct {
	MatchExpressions []SelectorRequirement `toml:"match_expressions,omitempty"`
	MatchFields      []SelectorRequirement `toml:"match_fields,omitempty"`
}

// SelectorRequirement is key/operator/values.
type SelectorRequirement struct {
	Key      string   `toml:"key,omitempty"`
	Operator string   `toml:"operator,omitempty"`
	Values   []string `toml:"values,omitempty"`
}

// PreferredSchedulingTerm is a weighted node selector term.
type PreferredSchedulingTerm struct {
	Weight     int32            `toml:"weight"`
	Preference NodeSelectorTerm `toml:"preference"`
}

// PodAffinity is affinity.pod_affinity and affinity.pod_anti_affinity.
type PodAffinity struct {
	RequiredDuringSchedulingIgnoredDuringExecution  []PodAffinityTerm         `toml:"required_during_scheduling_ignored_during_execution,omitempty"`
	PreferredDuringSchedulingIgnoredDuringExecution []WeightedPodAffinityTerm `toml:"preferred_during_scheduling_ignored_during_execution,omitempty"`
}

// PodAffinityTerm selects pods by labels within namespaces.
type PodAffinityTerm struct {
	LabelSelector     *LabelSelector `toml:"label_selector,omitempty"`
	Namespaces        []string       `toml:"namespaces,omitempty"`
	TopologyKey       string         `toml:"topology_key,omitempty"`
	NamespaceSelector *LabelSelector `toml:"namespace_selector,omitempty"`
}

// WeightedPodAffinityTerm is a weighted PodAffinityTerm.
type WeightedPodAffinityTerm struct {
	Weight          int32           `toml:"weight"`
	PodAffinityTerm PodAffinityTerm `toml:"pod_affinity_term"`
}

// LabelSelector is match_labels + match_expressions.
type LabelSelector struct {
	MatchLabels      map[string]string     `toml:"match_labels,omitempty"`
	MatchExpressions []SelectorRequirement `toml:"match_expressions,omitempty"`
}

// DNSConfig is [runners.kubernetes.dns_config].
type DNSConfig struct {
	Nameservers []string          `toml:"nameservers,omitempty"`
	Searches    []string          `toml:"searches,omitempty"`
	Options     []DNSConfigOption `toml:"options,omitempty"`
}

// DNSConfigOption is one resolver option.
type DNSConfigOption struct {
	Name  string  `toml:"name"`
	Value *string `toml:"value,omitempty"`
}

// HostAlias is one [[runners.kubernetes.host_aliases]].
type HostAlias struct {
	IP        string   `toml:"ip"`
	Hostnames []string `toml:"hostnames"`
}

// PodSpecPatch is one [[runners.kubernetes.pod_spec]] (experimental).
type PodSpecPatch struct {
	Name      string `toml:"name,omitempty"`
	PatchPath string `toml:"patch_path,omitempty"`
	Patch     string `toml:"patch,omitempty"`
	PatchType string `toml:"patch_type,omitempty"`
}

// PodSecurityContext is [runners.kubernetes.pod_security_context].
type PodSecurityContext struct {
	FSGroup             *int64  `toml:"fs_group,omitempty"`
	RunAsGroup          *int64  `toml:"run_as_group,omitempty"`
	RunAsNonRoot        *bool   `toml:"run_as_non_root,omitempty"`
	RunAsUser           *int64  `toml:"run_as_user,omitempty"`
	SupplementalGroups  []int64 `toml:"supplemental_groups,omitempty"`
	SELinuxType         string  `toml:"selinux_type,omitempty"`
	FSGroupChangePolicy string  `toml:"fs_group_change_policy,omitempty"`
}

// ContainerSecurityContext is a *_container_security_context table.
type ContainerSecurityContext struct {
	Capabilities             *Capabilities `toml:"capabilities,omitempty"`
	Privileged               *bool         `toml:"privileged,omitempty"`
	RunAsUser                *int64        `toml:"run_as_user,omitempty"`
	RunAsGroup               *int64        `toml:"run_as_group,omitempty"`
	RunAsNonRoot             *bool         `toml:"run_as_non_root,omitempty"`
	ReadOnlyRootFilesystem   *bool         `toml:"read_only_root_filesystem,omitempty"`
	AllowPrivilegeEscalation *bool         `toml:"allow_privilege_escalation,omitempty"`
	SELinuxType              string        `toml:"selinux_type,omitempty"`
	ProcMount                string        `toml:"proc_mount,omitempty"`
}

// Capabilities adds/drops Linux capabilities.
type Capabilities struct {
	Add  []string `toml:"add,omitempty"`
	Drop []string `toml:"drop,omitempty"`
}

// ContainerLifecycle is [runners.kubernetes.container_lifecycle].
type ContainerLifecycle struct {
	PostStart *LifecycleHandler `toml:"post_start,omitempty"`
	PreStop   *LifecycleHandler `toml:"pre_stop,omitempty"`
}

// LifecycleHandler is one hook.
type LifecycleHandler struct {
	Exec *struct {
		Command []string `toml:"command,omitempty"`
	} `toml:"exec,omitempty"`
	HTTPGet *struct {
		Host        string `toml:"host,omitempty"`
		Path        string `toml:"path,omitempty"`
		Port        int    `toml:"port,omitempty"`
		Scheme      string `toml:"scheme,omitempty"`
		HTTPHeaders []struct {
			Name  string `toml:"name"`
			Value string `toml:"value"`
		} `toml:"http_headers,omitempty"`
	} `toml:"http_get,omitempty"`
	TCPSocket *struct {
		Host string `toml:"host,omitempty"`
		Port int    `toml:"port,omitempty"`
	} `toml:"tcp_socket,omitempty"`
}

// Volumes is [runners.kubernetes.volumes].
type Volumes struct {
	HostPaths  []HostPathVolume  `toml:"host_path,omitempty"`
	PVCs       []PVCVolume       `toml:"pvc,omitempty"`
	ConfigMaps []ConfigMapVolume `toml:"config_map,omitempty"`
	Secrets    []SecretVolume    `toml:"secret,omitempty"`
	EmptyDirs  []EmptyDirVolume  `toml:"empty_dir,omitempty"`
	CSIs       []CSIVolume       `toml:"csi,omitempty"`
	NFSs       []NFSVolume       `toml:"nfs,omitempty"`
}

// VolumeMount holds the keys every volume kind shares.
type VolumeMount struct {
	Name      string `toml:"name"`
	MountPath string `toml:"mount_path"`
	SubPath   string `toml:"sub_path,omitempty"`
	ReadOnly  bool   `toml:"read_only,omitempty"`
}

// HostPathVolume is [[runners.kubernetes.volumes.host_path]].
type HostPathVolume struct {
	VolumeMount
	HostPath string `toml:"host_path,omitempty"`
}

// PVCVolume is [[runners.kubernetes.volumes.pvc]].
type PVCVolume struct {
	VolumeMount
}

// ConfigMapVolume is [[runners.kubernetes.volumes.config_map]].
type ConfigMapVolume struct {
	VolumeMount
	Items map[string]string `toml:"items,omitempty"`
}

// SecretVolume is [[runners.kubernetes.volumes.secret]].
type SecretVolume struct {
	VolumeMount
	Items map[string]string `toml:"items,omitempty"`
}

// EmptyDirVolume is [[runners.kubernetes.volumes.empty_dir]].
type EmptyDirVolume struct {
	VolumeMount
	Medium    string   `toml:"medium,omitempty"`
	SizeLimit Quantity `toml:"size_limit,omitempty"`
}

// CSIVolume is [[runners.kubernetes.volumes.csi]].
type CSIVolume struct {
	VolumeMount
	Driver           string            `toml:"driver"`
	FSType           string            `toml:"fs_type,omitempty"`
	VolumeAttributes map[string]string `toml:"volume_attributes,omitempty"`
}

// NFSVolume is [[runners.kubernetes.volumes.nfs]].
type NFSVolume struct {
	VolumeMount
	Server string `toml:"server"`
	Path   string `toml:"path"`
}

// Service is one [[runners.kubernetes.services]].
type Service struct {
	Name        string   `toml:"name"`
	Alias       string   `toml:"alias,omitempty"`
	Command     []string `toml:"command,omitempty"`
	Entrypoint  []string `toml:"entrypoint,omitempty"`
	Environment []string `toml:"environment,omitempty"`
}
