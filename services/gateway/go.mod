module github.com/meshmart/meshmart/services/gateway

go 1.26.7

replace (
	github.com/meshmart/meshmart/pkg => ../../pkg
	github.com/meshmart/meshmart/proto => ../../proto
)
