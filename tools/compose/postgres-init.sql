-- One database per service, each owned by the service's own role (docker-compose.yml). Runs once,
-- when the PostgreSQL volume is new. Development passwords: set your own in production.
CREATE ROLE user_service LOGIN PASSWORD 'user_service';
CREATE DATABASE meshmart_user OWNER user_service;
CREATE ROLE order_service LOGIN PASSWORD 'order_service';
CREATE DATABASE meshmart_order OWNER order_service;
CREATE ROLE payment_service LOGIN PASSWORD 'payment_service';
CREATE DATABASE meshmart_payment OWNER payment_service;
