output "bucket" {
  description = "The data bucket: upload to gs://<bucket>/raw/dt=YYYY-MM-DD/<upload_id>.csv."
  value       = google_storage_bucket.data.name
}

output "ingest_url" {
  description = "POST uploads here with Authorization: Bearer <uploader token>."
  value       = google_cloudfunctions2_function.fn["ingest"].service_config[0].uri
}

output "api_url" {
  description = "The results API and the managers' page."
  value       = google_cloud_run_v2_service.app["api"].uri
}

output "image_repository" {
  description = "Push the API image here (docker push <repository>/api:<tag>)."
  value       = "${var.region}-docker.pkg.dev/${var.project}/${google_artifact_registry_repository.images.repository_id}"
}

output "train_job" {
  description = "The Cloud Run job for long trainings."
  value       = google_cloud_run_v2_job.train.name
}

output "dead_letter_subscriptions" {
  description = "Where undeliverable messages wait (pull them to inspect, republish after a fix)."
  value       = [for sub in google_pubsub_subscription.dead_letter : sub.name]
}
